// Keysmith's own JavaScript: copy-to-clipboard buttons. Everything else is htmx or plain forms.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-copy-target]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copyTarget);
  if (!source) return;
  // A list (recovery codes) is copied one item a line.
  const items = source.matches("ul, ol") ? [...source.querySelectorAll("li")] : [source];
  const text = items.map((item) => item.textContent.trim()).join("\n");
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Older browsers or insecure origins: select the text so Ctrl+C works.
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    document.execCommand("copy");
  }
  const label = button.textContent;
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = label; }, 2000);
});

// Forms marked data-swap-errors answer 400 (or 429, over a limit) with themselves and their
// errors: show that answer (htmx by default does not swap 4xx responses).
document.addEventListener("htmx:beforeSwap", (event) => {
  const source = event.detail.requestConfig && event.detail.requestConfig.elt;
  const status = event.detail.xhr.status;
  if ((status === 400 || status === 429) && source && source.closest("[data-swap-errors]")) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});

// An htmx request the server refused (403: a role changed since the page loaded; 404: it is
// gone; 409: another tab switched organization) must not fail silently.
const REFUSALS = {
  403: "You are not allowed to do that (your role may have changed). Reload the page.",
  404: "That is no longer here. Reload the page.",
  409: "This page belongs to an organization that is no longer current here. Reload the page.",
  413: "That was too large to send.",
  429: "Too many requests. Wait a moment and try again.",
};
document.addEventListener("htmx:responseError", (event) => {
  const status = event.detail.xhr.status;
  const message = REFUSALS[status] || "Something went wrong. Reload the page and try again.";
  let notice = document.getElementById("request-error");
  if (!notice) {
    notice = document.createElement("div");
    notice.id = "request-error";
    notice.className = "flash flash-danger";
    notice.setAttribute("role", "alert");
    document.getElementById("main").prepend(notice);
  }
  notice.textContent = message;
  notice.scrollIntoView({ block: "nearest" });
});

// After create or rotate, bring the one-time secret into view (on a phone it is far above).
// After a revoke, close the panel if it shows that token's secret: it can never work now.
document.addEventListener("htmx:load", (event) => {
  const elt = event.detail.elt;
  const panel = elt.querySelector && elt.querySelector("#secret-panel.secret-panel");
  if (panel) panel.scrollIntoView({ block: "start" });
  const revoked = elt.matches && elt.matches("tr.status-revoked") ? elt.id.replace("token-", "") : null;
  const stale = revoked && document.querySelector(`#secret-panel[data-token-id="${revoked}"]`);
  if (stale) stale.replaceWith(Object.assign(document.createElement("div"), { id: "secret-panel" }));
});

// Focus after every htmx swap (issue 20): a keyboard or screen-reader user must not land on
// the page's body. In the new content, focus goes to the first of: an element marked
// data-focus (the one-time secret panel, a changed row's own target), an [autofocus] field
// (htmx focuses it itself), the Actions button of a swapped row, the swapped element.
// What happened is said in the live region (#announcer): data-announce, else a heading.
let swapped = [];
document.addEventListener("htmx:beforeSwap", () => { swapped = []; });
document.addEventListener("htmx:load", (event) => {
  if (event.detail.elt !== document.body) swapped.push(event.detail.elt);
});
const FOCUSABLE = "a[href], button:not([disabled]), summary, input:not([type=hidden]), select, textarea, [tabindex]";
function focusInto(node) {
  const marked = node.matches("[data-focus]") ? node : node.querySelector("[data-focus]");
  const target = marked
    || node.querySelector("[autofocus]")
    || (node.matches("tr") && (node.querySelector("details.menu > summary") || node.querySelector(FOCUSABLE)))
    || node;
  if (!target.matches(FOCUSABLE)) target.setAttribute("tabindex", "-1");
  target.focus();
  return target;
}
function announce(node) {
  const source = node.matches("[data-announce]") ? node : node.querySelector("[data-announce]");
  let text = source ? source.dataset.announce : "";
  if (!text && node.matches("tr")) {
    const cells = [node.querySelector("a, strong"), node.querySelector(".badge:not(.role):not(.hygiene)")];
    text = cells.filter(Boolean).map((c) => c.textContent.trim()).join(": ");
  }
  if (!text) {
    const heading = node.querySelector("h2, h3");
    text = heading ? heading.textContent.trim() : "";
  }
  const region = document.getElementById("announcer");
  if (region && text) {
    region.textContent = "";
    setTimeout(() => { region.textContent = text; }, 50); // a fresh change is read out again
  }
}
document.addEventListener("htmx:afterSettle", () => {
  const nodes = swapped.filter((n) => n.isConnected && n.nodeType === Node.ELEMENT_NODE);
  swapped = [];
  if (!nodes.length) return;
  const priority = nodes.find((n) => n.matches("[data-focus]") || n.querySelector("[data-focus]"))
    || nodes.find((n) => n.matches("[autofocus]") || n.querySelector("[autofocus]"));
  // An answer that landed elsewhere (the rotate form above the list) closes the menu it came from.
  document.querySelectorAll("details.menu[open]").forEach((menu) => {
    if (!nodes.some((n) => menu.contains(n) || n.contains(menu))) menu.open = false;
  });
  const active = document.activeElement;
  const lost = !active || active === document.body || !active.isConnected;
  if (priority) {
    if (!priority.contains(document.activeElement)) focusInto(priority);
    announce(priority);
  } else if (lost) {
    const node = nodes[nodes.length - 1]; // out-of-band pieces swap first, the main one last
    focusInto(node);
    announce(node);
  }
});

// A whole page that answers with a one-time secret or link (a plain form post, without
// htmx) puts the focus on it too, unless a field asked for the focus itself.
document.addEventListener("DOMContentLoaded", () => {
  const marked = document.querySelector("#main [data-focus]");
  if (marked && !document.querySelector("[autofocus]")) focusInto(marked);
});

// Escape closes the menu or disclosure that holds the focus (the Actions menu, the
// organization switcher, a Revoke… confirmation) and gives focus back to its button.
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape" || event.defaultPrevented) return;
  const open = document.activeElement && document.activeElement.closest("details[open]");
  if (!open) return;
  open.open = false;
  const summary = open.querySelector(":scope > summary");
  if (summary) summary.focus();
  event.preventDefault();
});

document.documentElement.classList.remove("no-js");

// What a script written against the types openapi-typescript generates from
// /api/v1/openapi.json does: list, create with only a name, suspend, rotate, revoke.
// tests/test_api_clients.py type-checks it with `tsc --strict` (beside the generated
// api.d.ts), then runs it against a live server: node smoke.js <api base URL> <token>.
import type { components, operations } from "./api";

type Body<Op extends keyof operations> = operations[Op] extends {
  requestBody?: { content: { "application/json": infer B } };
}
  ? B
  : never;
type Answer<Op extends keyof operations, Status extends number> = operations[Op] extends {
  responses: { [S in Status]: { content: { "application/json": infer A } } };
}
  ? A
  : never;

type Token = components["schemas"]["Token"];
type TokenWithSecret = components["schemas"]["TokenWithSecret"];
type TokenList = Answer<"listTokens", 200>;
type ApiError = components["schemas"]["Error"];

declare const process: { argv: string[]; exitCode?: number };

async function call<T>(
  base: string,
  secret: string,
  method: string,
  path: string,
  body?: object,
): Promise<{ status: number; body: T; requestId: string | null }> {
  const response = await fetch(base + path, {
    method,
    headers: {
      Authorization: `Bearer ${secret}`,
      ...(body === undefined ? {} : { "Content-Type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return {
    status: response.status,
    body: (text ? JSON.parse(text) : null) as T,
    requestId: response.headers.get("X-Request-Id"),
  };
}

function check(condition: boolean, what: string): void {
  if (!condition) throw new Error(`failed: ${what}`);
}

async function main(): Promise<void> {
  const [base, secret] = process.argv.slice(2);

  const listed = await call<TokenList>(base, secret, "GET", "/api_tokens?length=10");
  check(listed.status === 200 && listed.body.query.length >= 1, "list");

  const create: Body<"createToken"> = { name: "typescript client" };
  // @ts-expect-error a create needs a name: the types are not `any`
  const nameless: Body<"createToken"> = {};
  void nameless;
  const created = await call<TokenWithSecret>(base, secret, "POST", "/api_tokens", create);
  check(created.status === 201 && created.body.token.startsWith("ks_"), "create");
  const role: components["schemas"]["TokenRole"] = created.body.role;
  check(role === "viewer", "default role");

  const suspend: Body<"updateToken"> = { active: false };
  const path = `/api_tokens/${created.body.id}`;
  const patched = await call<Token>(base, secret, "PATCH", path, suspend);
  check(patched.status === 200 && patched.body.status === "inactive", "patch");
  check(patched.body.expires_at === created.body.expires_at, "patch keeps the expiry");

  const rotate: Body<"rotateToken"> = {};
  const rotated = await call<TokenWithSecret>(base, secret, "POST", `${path}/rotate`, rotate);
  check(rotated.status === 200 && rotated.body.token !== created.body.token, "rotate");

  const revoked = await call<null>(base, secret, "DELETE", path);
  check(revoked.status === 204, "revoke");
  const gone = await call<Token>(base, secret, "GET", path);
  check(gone.body.status === "revoked" && gone.body.revoked_at !== null, "revoked");

  const refused = await call<ApiError>(base, secret, "POST", "/api_tokens", { name: "" });
  check(refused.status === 400 && refused.body.error.code === "validation_error", "error");
  check(refused.requestId !== null, "X-Request-Id");

  console.log(JSON.stringify({ ok: true, created: created.body.id }));
}

main().catch((error: unknown) => {
  console.error(error);
  process.exitCode = 1;
});

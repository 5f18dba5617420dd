"""Drive a full authorization-code + PKCE flow against the test OP with plain HTTP requests
(redirects followed by hand, cookies kept in a requests.Session)."""
import base64, hashlib, secrets, sys, time, urllib.parse as up
import requests, jwt

ISS = "http://127.0.0.1:9400"
CLIENT = sys.argv[1] if len(sys.argv) > 1 else "ixp-web"
SECRET = {"ixp-web": "ixp-web-secret"}.get(CLIENT)
REDIRECT = {"ixp-web": "http://127.0.0.1:9401/callback", "ixp-native": "http://127.0.0.1:53117/callback"}[CLIENT]

disc = requests.get(ISS + "/.well-known/openid-configuration").json()
print("discovery: issuer", disc["issuer"], "| token", disc["token_endpoint"], "| pkce", disc["code_challenge_methods_supported"])
jwks = requests.get(disc["jwks_uri"]).json()
print("jwks:", [(k["kid"], k["kty"], k.get("alg")) for k in jwks["keys"]], "| private 'd' present:", any("d" in k for k in jwks["keys"]))

def authorize(hint="alice", with_pkce=True, verbose=True):
    verifier = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    p = dict(response_type="code", client_id=CLIENT, redirect_uri=REDIRECT, scope="openid profile email offline_access",
             state=state, nonce=nonce, login_hint=hint, prompt="consent")
    if with_pkce: p.update(code_challenge=challenge, code_challenge_method="S256")
    s = requests.Session(); url = disc["authorization_endpoint"] + "?" + up.urlencode(p)
    for hop in range(10):
        r = s.get(url, allow_redirects=False); loc = r.headers.get("location")
        if verbose: print(f"  hop {hop}: GET {up.urlsplit(url).path} -> {r.status_code} -> {loc and (loc.split('?')[0] if loc.startswith('http') else loc)}")
        if r.status_code not in (302, 303) or not loc:
            return {"http_status": r.status_code, "body": r.text[:300]}, None, None, None
        url = up.urljoin(url, loc)
        if url.startswith(REDIRECT.rsplit("/", 1)[0]): break
    q = dict(up.parse_qsl(up.urlsplit(url).query))
    return q, verifier, state, nonce

def token(data):
    data = dict(data)
    if SECRET: return requests.post(disc["token_endpoint"], data=data, auth=(CLIENT, SECRET))
    data["client_id"] = CLIENT; return requests.post(disc["token_endpoint"], data=data)

print("== flow 1 (full)")
q, verifier, state, nonce = authorize("alice")
print("  callback:", {k: (v[:10] + "...") if k == "code" else v for k, v in q.items()})
assert q["state"] == state and q["iss"] == ISS
base = dict(grant_type="authorization_code", code=q["code"], redirect_uri=REDIRECT)
r = token({**base, "code_verifier": "A" * 43}); print("  token, WRONG code_verifier:", r.status_code, r.json())
r = token(base); print("  token, NO code_verifier:", r.status_code, r.json())
r = token({**base, "code_verifier": verifier}); t = r.json()
print("  token, right verifier:", r.status_code, {k: (v[:16] + "...") if isinstance(v, str) and len(v) > 20 else v for k, v in t.items()})
hdr = jwt.get_unverified_header(t["id_token"])
key = jwt.PyJWK({k: v for k, v in next(k for k in jwks["keys"] if k["kid"] == hdr["kid"]).items()})
claims = jwt.decode(t["id_token"], key.key, algorithms=[hdr["alg"]], audience=CLIENT, issuer=ISS)
print("  id_token header:", hdr, "\n  id_token claims (signature verified with JWKS):", claims)
assert claims["nonce"] == nonce and claims["sub"] == "alice"
ui = requests.get(disc["userinfo_endpoint"], headers={"Authorization": "Bearer " + t["access_token"]})
print("  userinfo:", ui.status_code, ui.json())
if "refresh_token" in t:
    rr = token(dict(grant_type="refresh_token", refresh_token=t["refresh_token"]))
    print("  refresh:", rr.status_code, sorted(rr.json().keys()))
r = token({**base, "code_verifier": verifier}); print("  code reuse:", r.status_code, r.json())
print("== flow 2 (no code_challenge in the authorization request)")
q, *_ = authorize("bob", with_pkce=False, verbose=False); print("  ->", q)
print("== flow 3 (login_hint=deny)")
q, *_ = authorize("deny", verbose=False); print("  ->", q)
if SECRET:
    cc = requests.post(disc["token_endpoint"], data=dict(grant_type="client_credentials", scope="api:read"), auth=(CLIENT, SECRET))
    print("== client_credentials:", cc.status_code, {k: (v[:16] + "...") if isinstance(v, str) and len(v) > 20 else v for k, v in cc.json().items()})

#!/usr/bin/env node
// A real OpenID Provider (npm `oidc-provider`, pinned in package.json) for pachagent's tests. Never used in
// production code: it accepts any login name with any password.
//
// Start: node tests/oidc/server.js [options]
//   --port N                   listen on 127.0.0.1:N (default 0: a free port picked by the OS)
//   --trailing-slash           issuer "http://127.0.0.1:PORT/" (as Auth0 spells it); discovery and `iss` keep the slash
//   --id-token-ttl SECONDS     ID token lifetime (default 300)
//   --access-token-ttl SECONDS access token lifetime (default 3600)
//   --refresh-token-ttl SECONDS refresh token lifetime (default 14 days)
//   --clients FILE             JSON array of client metadata registered instead of the default clients below
//   --die-with-stdin           exit when stdin reaches EOF (the test harness keeps a pipe open; if the test
//                              process dies, the pipe closes and this server goes with it)
// When ready it prints exactly one line on stdout and nothing else ever goes to stdout:
//   {"issuer":"http://127.0.0.1:PORT","port":PORT}
// Diagnostics (including oidc-provider's notices and its "Unsupported runtime" warning on Node 20) go to stderr.
//
// Accounts: the login name typed on the login page becomes `sub`; `email` is the login name when it contains "@",
// else "<login>@example.com"; `email_verified` is always true. Claims go into the ID token too
// (conformIdTokenClaims: false).
//
// Default clients (all may use authorization_code, refresh_token and the device_code grant):
//   pachagent              public native client (no secret, PKCE required); redirect URIs
//                          http://127.0.0.1/callback and http://localhost/callback, any port (RFC 8252 loopback)
//   pachagent-confidential the same with client_secret_basic, secret "confidential-secret"
//   pachagent-exact        public web client: the redirect URI must be exactly http://127.0.0.1:47651/callback
//   pachd                  confidential native client, secret "pachd-secret"; redirect URIs
//                          http://127.0.0.1/authorization-code/callback and
//                          http://localhost/authorization-code/callback, any port
// Scopes: openid email profile offline_access, plus audience:server:client_id:pachd (accepted, no effect).
// Refresh tokens need `offline_access` AND prompt=consent in the authorization request (oidc-provider drops
// offline_access otherwise). Refresh tokens rotate; reusing an old one revokes the whole grant.
//
// Test-only endpoints (outside the OIDC tree, always answered even while "down"):
//   GET  /__test/stats                 {"authorization_code":N,"refresh_token":N,"device_code":N,
//                                       "errors":{"<grant_type>":N},"authorizations":N,"down":bool}
//                                      counts of successful /token grants by type; failed ones by type (device
//                                      polls answered authorization_pending count too); and authorizations the
//                                      user completed (codes sent to redirect URIs, and device confirmations)
//   POST /__test/revoke-grants?sub=S   revokes every grant of account S: its refresh tokens, access tokens and
//                                      unused codes die (a refresh then answers 400 invalid_grant);
//                                      answers {"revoked":N}
//   POST /__test/down                  every other endpoint answers 503 {"error":"temporarily_unavailable"}
//   POST /__test/up                    back to normal
//   POST /__test/forge                 body: {"set":{claim:value},"remove":[claim],"signing":MODE}; the NEXT /token
//                                      answer that carries an id_token (any grant) carries instead one re-minted
//                                      from the genuine one: claims set/removed, then signed as MODE says:
//                                        "provider"          the provider's current key and kid (default)
//                                        "stranger"          another RSA key, under the provider's kid (a bad
//                                                            signature)
//                                        "unknown-kid"       another RSA key under a kid the JWKS never lists
//                                        "none"              alg "none", empty signature
//                                        "hs256-public-key"  HS256 keyed with the provider's public key PEM (the
//                                                            key-confusion attack)
//                                      answers {"pending":true}; a second forge replaces a pending one
//   GET  /__test/seen                  every secret that crossed /token so far, by kind: {"authorization code":[..],
//                                      "PKCE verifier":[..],"refresh token":[..],"device code":[..],"ID token":[..],
//                                      "access token":[..]} (presented by clients, and issued), for leak tests
//   POST /__test/rotate-keys           the provider signs ID tokens with a new RSA key under a new kid from now on,
//                                      and /jwks lists the new key first and still the old ones (tokens already
//                                      issued keep verifying); answers {"kid":"<new kid>"}
// /__test/stats also counts "jwks" (GETs of /jwks, the JWKS), the same by User-Agent in "jwks_by_user_agent"
// ({"<user agent>":N}, "" when none was sent), and "forged" (ID tokens replaced by a forge).

'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');

// oidc-provider prints notices with console.info (stdout). stdout carries the ready line only.
console.info = console.warn;
console.log = console.warn;

function usage(message) {
  process.stderr.write(`server.js: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    port: 0,
    trailingSlash: false,
    idTokenTtl: 300,
    accessTokenTtl: 3600,
    refreshTokenTtl: 14 * 24 * 3600,
    clientsFile: null,
    dieWithStdin: false,
  };
  const seconds = (name, value) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n <= 0) usage(`${name} wants a positive whole number of seconds, got ${value}`);
    return n;
  };
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i];
    const value = () => {
      i += 1;
      if (i >= argv.length) usage(`${arg} needs a value`);
      return argv[i];
    };
    switch (arg) {
      case '--port': {
        const v = value();
        opts.port = Number(v);
        if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) usage(`bad --port ${v}`);
        break;
      }
      case '--trailing-slash': opts.trailingSlash = true; break;
      case '--id-token-ttl': opts.idTokenTtl = seconds(arg, value()); break;
      case '--access-token-ttl': opts.accessTokenTtl = seconds(arg, value()); break;
      case '--refresh-token-ttl': opts.refreshTokenTtl = seconds(arg, value()); break;
      case '--clients': opts.clientsFile = value(); break;
      case '--die-with-stdin': opts.dieWithStdin = true; break;
      default: usage(`unknown argument ${arg}`);
    }
  }
  return opts;
}

const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const GRANT_TYPES = ['authorization_code', 'refresh_token', DEVICE_GRANT];

function defaultClients() {
  return [
    {
      client_id: 'pachagent',
      application_type: 'native',
      token_endpoint_auth_method: 'none',
      redirect_uris: ['http://127.0.0.1/callback', 'http://localhost/callback'],
      grant_types: GRANT_TYPES,
      response_types: ['code'],
    },
    {
      client_id: 'pachagent-confidential',
      client_secret: 'confidential-secret',
      application_type: 'native',
      token_endpoint_auth_method: 'client_secret_basic',
      redirect_uris: ['http://127.0.0.1/callback', 'http://localhost/callback'],
      grant_types: GRANT_TYPES,
      response_types: ['code'],
    },
    {
      client_id: 'pachagent-exact',
      application_type: 'web',
      token_endpoint_auth_method: 'none',
      redirect_uris: ['http://127.0.0.1:47651/callback'],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
    },
    {
      client_id: 'pachd',
      client_secret: 'pachd-secret',
      application_type: 'native',
      token_endpoint_auth_method: 'client_secret_basic',
      redirect_uris: [
        'http://127.0.0.1/authorization-code/callback',
        'http://localhost/authorization-code/callback',
      ],
      grant_types: GRANT_TYPES,
      response_types: ['code'],
    },
  ];
}

function emailOf(login) {
  return login.includes('@') ? login : `${login}@example.com`;
}

function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server.address().port));
  });
}

function sendJson(res, status, body) {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store',
  });
  res.end(text);
}

// An RSA signing key with its JWK metadata.
function signingKey() {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { privateKey, publicKey, meta: { kid: crypto.randomBytes(8).toString('hex'), alg: 'RS256', use: 'sig' } };
}

function publicJwk(key) {
  return { ...key.publicKey.export({ format: 'jwk' }), ...key.meta };
}

const SIGNING_MODES = ['provider', 'stranger', 'unknown-kid', 'none', 'hs256-public-key'];

function forgeProblem(body) {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return 'the body must be a JSON object';
  const known = ['set', 'remove', 'signing'];
  const extra = Object.keys(body).filter((k) => !known.includes(k));
  if (extra.length) return `unknown fields ${extra.join(', ')} (known: ${known.join(', ')})`;
  if (body.set !== undefined && (typeof body.set !== 'object' || body.set === null || Array.isArray(body.set))) {
    return '"set" must be an object of claims';
  }
  if (body.remove !== undefined && !(Array.isArray(body.remove) && body.remove.every((c) => typeof c === 'string'))) {
    return '"remove" must be an array of claim names';
  }
  if (body.signing !== undefined && !SIGNING_MODES.includes(body.signing)) {
    return `"signing" must be one of ${SIGNING_MODES.join(', ')}`;
  }
  return null;
}

function readJson(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('error', reject);
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}'));
      } catch (err) {
        reject(err);
      }
    });
  });
}

// One stranger key for every forge that needs a key the provider never published.
let stranger = null;

// Re-mints a compact JWT: the genuine one's header and claims, changed as `spec` says, signed as it says.
function forged(jwt, spec, key) {
  const [rawHeader, rawPayload] = jwt.split('.');
  const header = JSON.parse(Buffer.from(rawHeader, 'base64url').toString('utf8'));
  const claims = { ...JSON.parse(Buffer.from(rawPayload, 'base64url').toString('utf8')), ...(spec.set || {}) };
  for (const name of spec.remove || []) delete claims[name];
  const mode = spec.signing || 'provider';
  if (mode === 'stranger' || mode === 'unknown-kid') stranger = stranger || signingKey();
  const encode = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const mint = (alg, kid, sign) => {
    const head = { ...header, alg };
    if (kid === undefined) delete head.kid; else head.kid = kid;
    const input = `${encode(head)}.${encode(claims)}`;
    return `${input}.${sign(Buffer.from(input))}`;
  };
  const rs256 = (privateKey) => (data) => crypto.sign('sha256', data, privateKey).toString('base64url');
  switch (mode) {
    case 'stranger': return mint('RS256', key.meta.kid, rs256(stranger.privateKey));
    case 'unknown-kid': return mint('RS256', `unknown-${stranger.meta.kid}`, rs256(stranger.privateKey));
    case 'none': return mint('none', undefined, () => '');
    case 'hs256-public-key': {
      const pem = key.publicKey.export({ type: 'spki', format: 'pem' });
      return mint('HS256', key.meta.kid, (data) => crypto.createHmac('sha256', pem).update(data).digest('base64url'));
    }
    default: return mint('RS256', key.meta.kid, rs256(key.privateKey));
  }
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const clients = opts.clientsFile ? JSON.parse(fs.readFileSync(opts.clientsFile, 'utf8')) : defaultClients();
  if (!Array.isArray(clients)) usage('--clients must hold a JSON array of client metadata');

  // The port is needed for the issuer, so listen first and attach the provider afterwards.
  let handler = (req, res) => sendJson(res, 503, { error: 'temporarily_unavailable' });
  const server = http.createServer((req, res) => handler(req, res));
  const port = await listen(server, opts.port);
  const issuer = `http://127.0.0.1:${port}${opts.trailingSlash ? '/' : ''}`;

  const first = signingKey();
  const jwk = { ...first.privateKey.export({ format: 'jwk' }), ...first.meta };
  // The key ID tokens are signed with (oidc-provider's own until a rotation), and every key /jwks lists.
  let current = first;
  let published = [first];
  let rotated = false;

  const { default: Provider } = await import('oidc-provider');

  const provider = new Provider(issuer, {
    clients,
    jwks: { keys: [jwk] },
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    async findAccount(ctx, id) {
      return {
        accountId: id,
        async claims() {
          return {
            sub: id, email: emailOf(id), email_verified: true, name: id, preferred_username: id,
          };
        },
      };
    },
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['name', 'preferred_username'],
    },
    scopes: ['openid', 'offline_access', 'email', 'profile', 'audience:server:client_id:pachd'],
    conformIdTokenClaims: false,
    rotateRefreshToken: true,
    pkce: { required: (ctx, client) => client.clientAuthMethod === 'none' },
    features: {
      devInteractions: { enabled: true },
      deviceFlow: { enabled: true },
      revocation: { enabled: true },
    },
    ttl: {
      AccessToken: opts.accessTokenTtl,
      AuthorizationCode: 60,
      DeviceCode: 600,
      Grant: Math.max(opts.refreshTokenTtl, 14 * 24 * 3600),
      IdToken: opts.idTokenTtl,
      Interaction: 3600,
      RefreshToken: opts.refreshTokenTtl,
      Session: 3600,
    },
  });

  // Counters for /__test/stats, and every grant id by account for /__test/revoke-grants.
  const stats = {
    authorization_code: 0, refresh_token: 0, device_code: 0, errors: {}, authorizations: 0, jwks: 0, forged: 0,
    jwks_by_user_agent: {},
  };
  const shortGrantType = (t) => (t === DEVICE_GRANT ? 'device_code' : t || 'unknown');
  provider.on('grant.success', (ctx) => {
    const t = shortGrantType(ctx.oidc.params.grant_type);
    stats[t] = (stats[t] || 0) + 1;
  });
  provider.on('grant.error', (ctx) => {
    const t = shortGrantType(ctx.oidc.params && ctx.oidc.params.grant_type);
    stats.errors[t] = (stats.errors[t] || 0) + 1;
  });
  provider.on('authorization.success', () => { stats.authorizations += 1; });
  const grantsByAccount = new Map();
  provider.on('grant.saved', (grant) => {
    if (!grantsByAccount.has(grant.accountId)) grantsByAccount.set(grant.accountId, new Set());
    grantsByAccount.get(grant.accountId).add(grant.jti);
  });

  async function revokeGrants(sub) {
    const ids = [...(grantsByAccount.get(sub) || [])];
    grantsByAccount.delete(sub);
    for (const id of ids) {
      await Promise.all([
        provider.RefreshToken.revokeByGrantId(id),
        provider.AccessToken.revokeByGrantId(id),
        provider.AuthorizationCode.revokeByGrantId(id),
        provider.DeviceCode.revokeByGrantId(id),
      ]);
      await provider.Grant.adapter.destroy(id);
    }
    return ids.length;
  }

  // Rewrites answers on their way out: /jwks after a rotation, and ID tokens in /token answers (re-signed with
  // the rotated key, or replaced by a pending forge).
  let forge = null;
  // Every secret that crossed /token, for /__test/seen: what the client presented and what it was given.
  const seen = {};
  const remember = (kind, value) => {
    if (typeof value !== 'string' || value === '') return;
    if (!seen[kind]) seen[kind] = [];
    if (!seen[kind].includes(value)) seen[kind].push(value);
  };
  provider.use(async (ctx, next) => {
    await next();
    if (ctx.method === 'POST' && ctx.path === '/token') {
      const params = (ctx.oidc && ctx.oidc.params) || {};
      remember('authorization code', params.code);
      remember('PKCE verifier', params.code_verifier);
      remember('refresh token', params.refresh_token);
      remember('device code', params.device_code);
    }
    if (ctx.method === 'GET' && ctx.path === '/jwks' && ctx.status === 200 && rotated) {
      ctx.body = { keys: published.map(publicJwk) };
    }
    if (ctx.method === 'POST' && ctx.path === '/token' && ctx.status === 200 && ctx.body && ctx.body.id_token) {
      if (forge) {
        ctx.body.id_token = forged(ctx.body.id_token, forge, current);
        forge = null;
        stats.forged += 1;
      } else if (rotated) {
        ctx.body.id_token = forged(ctx.body.id_token, {}, current);
      }
    }
    if (ctx.method === 'POST' && ctx.path === '/token' && ctx.status === 200 && ctx.body) {
      remember('ID token', ctx.body.id_token);
      remember('access token', ctx.body.access_token);
      remember('refresh token', ctx.body.refresh_token);
    }
  });

  let down = false;
  const oidc = provider.callback();
  handler = (req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    if (url.pathname === '/jwks' && req.method === 'GET') {
      const agent = req.headers['user-agent'] || '';
      stats.jwks += 1;
      stats.jwks_by_user_agent[agent] = (stats.jwks_by_user_agent[agent] || 0) + 1;
    }
    if (url.pathname.startsWith('/__test/')) {
      const route = `${req.method} ${url.pathname}`;
      switch (route) {
        case 'POST /__test/forge':
          readJson(req).then((body) => {
            const problem = forgeProblem(body);
            if (problem) {
              sendJson(res, 400, { error: problem });
              return;
            }
            forge = body;
            sendJson(res, 200, { pending: true });
          }, (err) => sendJson(res, 400, { error: `the body is not JSON: ${err.message}` }));
          return;
        case 'POST /__test/rotate-keys':
          current = signingKey();
          published = [current, ...published];
          rotated = true;
          sendJson(res, 200, { kid: current.meta.kid });
          return;
        case 'GET /__test/seen':
          sendJson(res, 200, seen);
          return;
        case 'GET /__test/stats':
          sendJson(res, 200, { ...stats, down });
          return;
        case 'POST /__test/down':
          down = true;
          sendJson(res, 200, { down });
          return;
        case 'POST /__test/up':
          down = false;
          sendJson(res, 200, { down });
          return;
        case 'POST /__test/revoke-grants': {
          const sub = url.searchParams.get('sub');
          if (!sub) {
            sendJson(res, 400, { error: 'sub query parameter missing' });
            return;
          }
          revokeGrants(sub).then(
            (n) => sendJson(res, 200, { revoked: n }),
            (err) => sendJson(res, 500, { error: String(err) }),
          );
          return;
        }
        default:
          sendJson(res, 404, { error: `no test endpoint ${route}` });
          return;
      }
    }
    if (down) {
      sendJson(res, 503, { error: 'temporarily_unavailable', error_description: 'the test OP is down' });
      return;
    }
    // Endpoint URLs in discovery follow the request's Host header; pin it so they always match the issuer.
    req.headers.host = `127.0.0.1:${port}`;
    oidc(req, res);
  };

  if (opts.dieWithStdin) {
    process.stdin.on('end', () => process.exit(0));
    process.stdin.on('error', () => process.exit(0));
    process.stdin.resume();
  }
  process.on('SIGTERM', () => process.exit(0));
  process.on('SIGINT', () => process.exit(0));

  process.stdout.write(`${JSON.stringify({ issuer, port })}\n`);
}

main().catch((err) => {
  process.stderr.write(`server.js: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});

//! Development stand-ins for the services pachagent talks to, for `pachd-dev`, `pachagent dev`, local use and tests.
//!
//! - [`pachd`] is a pachd-compatible auth server: same RPCs, gRPC codes and messages as a real pachd for the part
//!   of `auth_v2.API` pachagent uses (including pachctl's `GetOIDCLogin` + `Authenticate{oidc_state}` login and
//!   its HTTP callback), with tokens held in memory.
//! - [`idp`] is a small OpenID Provider on loopback (login page, code + PKCE, refresh rotation, device flow) that
//!   pachd-dev starts when no issuer is given.
//!
//! Nothing outside `devstack`, the `pachd-dev` binary and `pachagent dev` imports this module; the agent must work
//! against a real pachd and a real IdP unchanged.

mod gofmt;
mod http;
pub mod idp;
mod idtoken;
pub mod pachd;
mod random;
mod tokens;

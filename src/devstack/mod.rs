//! Development stand-ins for the services pachagent talks to, for `pachd-dev`, local use and tests.
//!
//! [`pachd`] is a pachd-compatible auth server: same RPCs, gRPC codes and messages as a real pachd for the
//! part of `auth_v2.API` pachagent uses, with tokens held in memory. Nothing outside `devstack` and the
//! `pachd-dev` binary imports this module; the agent must work against a real pachd unchanged.

mod gofmt;
mod idtoken;
pub mod pachd;
mod tokens;

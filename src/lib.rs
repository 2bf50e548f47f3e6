//! pachagent keeps Pachyderm sessions for a workstation user: it logs in (OIDC, device flow, pachd's own flow,
//! or a token handed to it), keeps every secret in the OS keyring, and serves sessions over gRPC on an
//! owner-only Unix socket.
//!
//! # Layout
//! Dependencies point one way: `cli → client → proto`, and `daemon → api → engine → net → {oidc, pachd}`,
//! `engine → store`.
//!
//! - [`config`]: contexts (which pachd, which identity provider), the active context, socket and config paths.
//! - [`secret`]: token and secret types that redact themselves and zero their memory.
//! - [`store`]: the OS keyring backends (Secret Service, kernel keyutils, Keychain, Credential Manager).
//! - [`pachd`]: the client of pachd's `auth_v2.API`, with pachd's errors named by what to do next.
//! - [`oidc`]: the agent as an OpenID Connect client, and the loopback listener for the login redirect.
//! - [`net`]: the agent's calls to the identity provider and pachd, each made by a helper process
//!   (`pachagent-net`) so that the resident agent carries no HTTP, TLS or OpenID code.
//! - [`engine`]: the one owner of every session: login, restore, token hand-out, logout, events.
//! - [`api`]: the gRPC service over the engine, and the mapping of errors to status codes.
//! - [`daemon`]: the agent process: socket, single-instance lock, hardening, shutdown.
//! - [`pachctl`]: pachctl's own config file: its contexts, and keeping a context's session token in step with the
//!   agent's (opt-in), without touching anything else in it.
//! - [`private_dir`]: owner-only directories in shared places, and files opened in them without following links.
//! - [`client`]: the typed gRPC client of the agent's socket (starts the agent when asked).
//! - [`cli`]: the `pachagent` command line, the quick path the front answers itself, and the agent's flags.
//! - [`programs`]: the executables (`pachagent`, `pachagent-cli`, `pachagentd` and its helpers `pachagent-keyring`
//!   and `pachagent-net`) and how one finds or hands over to another.
//! - [`devstack`]: `pachd-dev` and the embedded dev OpenID Provider, for development and tests only.
//! - [`logging`]: log filtering that keeps tokens out of transport-level logs.
//! - [`proto`]: generated protobuf code.

pub mod api;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod devstack;
pub mod engine;
mod frames;
pub mod logging;
pub mod net;
pub mod oidc;
pub mod pachctl;
pub mod pachd;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod pow;
pub mod private_dir;
pub mod programs;
pub mod proto;
pub mod secret;
pub mod store;

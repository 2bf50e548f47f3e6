//! The agent's HTTP/2 server: hyper's connection driver under the gRPC routes, one task per connection, and a
//! graceful stop that lets the calls in flight finish.
//!
//! tonic's own server does the same, but it is built with a TLS acceptor (tonic's TLS features serve pachd-dev and
//! the helper's pachd client), and that acceptor (rustls and its crypto) would be part of the agent, which only
//! ever serves a Unix socket. Here the agent links hyper's server, which its gRPC needs anyway, and nothing else.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_stream::{Stream, StreamExt};
use tonic::service::Routes;
use tonic::transport::server::Connected;
use tower::ServiceExt as _;

/// How the agent's connections are served: the limits a client cannot exceed, and the keepalive that notices a
/// vanished client.
pub(super) struct Limits {
    pub max_streams: u32,
    pub max_header_list_bytes: u32,
    pub keepalive: (Duration, Duration),
}

/// Serves `routes` on every connection `incoming` yields until `stop` completes, then asks each connection to
/// finish (HTTP/2 GOAWAY: calls in flight complete, new ones go elsewhere) and returns once all have closed.
/// The connection's [`Connected::connect_info`] is in every request's extensions, as tonic puts it there.
pub(super) async fn serve<I, IO>(routes: Routes, incoming: I, limits: &Limits, stop: impl Future<Output = ()>)
where
    I: Stream<Item = io::Result<IO>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
{
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_streams)
        .max_header_list_size(limits.max_header_list_bytes)
        .keep_alive_interval(limits.keepalive.0)
        .keep_alive_timeout(limits.keepalive.1);
    let (closing, closing_rx) = tokio::sync::watch::channel(());
    // Boxed, so that the listener can be dropped (closed) before the connections finish.
    let mut incoming = Box::pin(incoming);
    tokio::pin!(stop);
    loop {
        let io = tokio::select! {
            () = &mut stop => break,
            next = incoming.next() => match next {
                Some(Ok(io)) => io,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "connection not accepted");
                    continue;
                }
                None => break,
            },
        };
        let info = io.connect_info();
        let routes = routes.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(info.clone());
            let call = routes.clone().oneshot(request.map(tonic::body::Body::new));
            async move { Ok::<_, Infallible>(call.await.unwrap_or_else(|never| match never {})) }
        });
        let connection = builder.serve_connection(TokioIo::new(io), service);
        let mut closing = closing_rx.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            let mut asked = false;
            loop {
                tokio::select! {
                    result = &mut connection => {
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    changed = closing.changed(), if !asked => {
                        asked = true;
                        if changed.is_ok() {
                            connection.as_mut().graceful_shutdown();
                        }
                    }
                }
            }
            // The stop waits until every connection has dropped its receiver.
            drop(closing);
        });
    }
    // No new connections from here: the listener goes with `incoming`.
    drop(incoming);
    drop(closing_rx);
    let _ = closing.send(());
    closing.closed().await;
}

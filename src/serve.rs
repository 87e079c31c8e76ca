//! The HTTP accept loop. `axum::serve` installs no timer in hyper, so hyper's header read
//! timeout never fires and a client that trickles request headers holds its connection for
//! ever (slow-loris); this loop is axum's, with the timer and the timeout set. It also bounds
//! what silent or numerous connections can hold: a connection must send its first byte within
//! the header timeout, and connections are capped in all and per client address, the ones
//! over a cap answered at once and closed. Graceful: on shutdown it stops accepting and waits
//! for open connections to finish their requests.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From accept to the first byte, and from the first byte to the end of the headers.
    pub header_timeout: Duration,
    pub connections: usize,
    pub per_ip: usize,
}

/// Open connections per client address; an entry goes when its last connection closes.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

impl PerIp {
    fn enter(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut open = self.0.lock().expect("per-ip lock");
        let n = open.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot(self.clone(), ip))
    }
}

struct IpSlot(Arc<PerIp>, IpAddr);

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = (self.0).0.lock().expect("per-ip lock");
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// A whole answer for a connection refused before HTTP is spoken on it.
async fn refuse(mut stream: TcpStream, status: &str, detail: &str) {
    let body = format!(
        r#"{{"type":"urn:compressd:problem:too-many-connections","title":"Too many connections","status":{},"detail":"{detail}"}}"#,
        &status[..3]
    );
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer.as_bytes())).await;
}

pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let open = Arc::new(Semaphore::new(limits.connections));
    let per_ip = Arc::new(PerIp::default());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream, "503 Service Unavailable", "the server holds as many connections as it takes (COMPRESSD_MAX_CONNECTIONS); retry shortly"));
            continue;
        };
        let Some(slot) = per_ip.enter(peer.ip(), limits.per_ip) else {
            tokio::spawn(refuse(stream, "429 Too Many Requests", "this address holds as many connections as one address may (COMPRESSD_MAX_CONNECTIONS_PER_IP); reuse them"));
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        let stopping = stop.clone();
        tokio::spawn(async move {
            let _held = (permit, slot);
            // A connection that sends nothing never starts hyper's header timer. Nor may it hold
            // up a shutdown (clients open connections they end up not using).
            let mut first = [0u8; 1];
            tokio::select! {
                peeked = tokio::time::timeout(limits.header_timeout, stream.peek(&mut first)) => {
                    if !matches!(peeked, Ok(Ok(n)) if n > 0) {
                        return;
                    }
                }
                _ = stopping.cancelled() => return,
            }
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

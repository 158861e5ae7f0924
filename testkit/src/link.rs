//! A loopback TCP link in front of the broker that tests can cut and restore.
//!
//! Cutting closes the listener and drops every connection, so clients see
//! exactly what they see when a broker goes down (refused connects, resets),
//! while the broker keeps its state and comes "back" on the same address.
//! The broker advertises the link's address, so all traffic goes through it.
//!
//! The link runs on a runtime of its own: clients under test may block their
//! runtime's workers (librdkafka commits synchronously inside rebalance
//! callbacks), and the link must keep forwarding regardless.

use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The link.
pub struct Link {
    /// Address clients connect to.
    pub addr: SocketAddr,
    target: SocketAddr,
    running: Mutex<Option<CancellationToken>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Link {
    /// Binds a free port forwarding to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("broker-link")
            .enable_all()
            .build()?;
        let listener = runtime
            .spawn(async { TcpListener::bind("127.0.0.1:0").await })
            .await
            .map_err(std::io::Error::other)??;
        let link = Link {
            addr: listener.local_addr()?,
            target,
            running: Mutex::new(None),
            runtime: Some(runtime),
        };
        link.serve(listener);
        Ok(link)
    }

    fn serve(&self, listener: TcpListener) {
        let Some(runtime) = self.runtime.as_ref() else {
            return;
        };
        let token = CancellationToken::new();
        if let Ok(mut running) = self.running.lock() {
            *running = Some(token.clone());
        }
        let target = self.target;
        runtime.spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                let token = token.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
    }

    /// Refuses new connections and drops open ones.
    pub fn cut(&self) {
        if let Ok(mut running) = self.running.lock()
            && let Some(token) = running.take()
        {
            token.cancel();
        }
    }

    /// Accepts connections again on the same address.
    pub async fn restore(&self) -> std::io::Result<()> {
        // The old listener closes asynchronously; retry the bind briefly.
        let Some(runtime) = self.runtime.as_ref() else {
            return Err(std::io::Error::other("link stopped"));
        };
        let addr = self.addr;
        let listener = runtime
            .spawn(async move {
                let mut last_error = None;
                for _ in 0..100 {
                    match TcpListener::bind(addr).await {
                        Ok(listener) => return Ok(listener),
                        Err(err) => last_error = Some(err),
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(last_error.unwrap_or_else(|| std::io::Error::other("bind failed")))
            })
            .await
            .map_err(std::io::Error::other)??;
        self.serve(listener);
        Ok(())
    }
}

//! The embedded HTTP stack: axum routers served by one small tokio runtime on its own threads,
//! beside the synchronous engine. The message-status webhook (`status::webhook`) is served
//! here; routers that share an address are merged onto one listener.
//!
//! Addresses are bound before [`HttpServer::start`] returns, so a port in use is an error at
//! startup, not a silent failure later. Dropping the server stops it (in-flight requests
//! finish first).

use axum::Router;
use std::io;
use std::net::SocketAddr;
use std::thread::JoinHandle;

/// A running HTTP server.
pub struct HttpServer {
    addrs: Vec<SocketAddr>,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds every address and serves its routers until dropped.
    ///
    /// # Errors
    /// When an address cannot be bound (in use, not local, no permission) or the runtime cannot
    /// start; the message names the address.
    pub fn start(routes: Vec<(SocketAddr, Router)>) -> io::Result<HttpServer> {
        let mut merged: Vec<(SocketAddr, Router)> = vec![];
        for (addr, router) in routes {
            match merged.iter_mut().find(|(a, _)| *a == addr) {
                Some((_, r)) => *r = std::mem::take(r).merge(router),
                None => merged.push((addr, router)),
            }
        }
        let mut listeners = vec![];
        for (addr, router) in merged {
            let l = std::net::TcpListener::bind(addr)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            l.set_nonblocking(true)?;
            listeners.push((l, router));
        }
        let addrs = listeners
            .iter()
            .map(|(l, _)| l.local_addr())
            .collect::<io::Result<Vec<_>>>()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("smsdrop-http")
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let thread = std::thread::Builder::new()
            .name("smsdrop-http".into())
            .spawn(move || {
                rt.block_on(async move {
                    let mut tasks = vec![];
                    for (l, router) in listeners {
                        let mut stopped = stopped.clone();
                        tasks.push(tokio::spawn(async move {
                            let l = match tokio::net::TcpListener::from_std(l) {
                                Ok(l) => l,
                                Err(e) => {
                                    tracing::error!(error = %e, "HTTP listener unusable");
                                    return;
                                }
                            };
                            let shutdown = async move {
                                let _ = stopped.wait_for(|s| *s).await;
                            };
                            if let Err(e) = axum::serve(l, router)
                                .with_graceful_shutdown(shutdown)
                                .await
                            {
                                tracing::error!(error = %e, "HTTP server stopped");
                            }
                        }));
                    }
                    for t in tasks {
                        let _ = t.await;
                    }
                });
            })?;
        for a in &addrs {
            tracing::info!(listen = %a, "HTTP listening");
        }
        Ok(HttpServer {
            addrs,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The bound addresses (a port 0 resolved), in the order first given.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

//! A TCP forwarder on a free loopback port in front of a real server, that a test can
//! cut (every connection dropped, new ones refused) and restore: a server outage as
//! the client sees it, without stopping a server other tests use.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A forwarder from `address()` to a target.
#[derive(Debug)]
pub struct Proxy {
    address: SocketAddr,
    target: SocketAddr,
    up: Arc<watch::Sender<bool>>,
    task: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts forwarding a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let up = Arc::new(watch::channel(true).0);
        let task = tokio::spawn(serve(listener, target, up.clone()));
        Ok(Proxy {
            address,
            target,
            up,
            task: Some(task),
        })
    }

    /// Where clients connect.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Drops every forwarded connection and stops listening.
    pub async fn cut(&mut self) {
        self.up.send_replace(false);
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    pub async fn restore(&mut self) -> std::io::Result<()> {
        self.up.send_replace(true);
        let listener = TcpListener::bind(self.address).await?;
        self.task = Some(tokio::spawn(serve(listener, self.target, self.up.clone())));
        Ok(())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.up.send_replace(false);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn serve(listener: TcpListener, target: SocketAddr, up: Arc<watch::Sender<bool>>) {
    while let Ok((client, _)) = listener.accept().await {
        let mut down = up.subscribe();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(target).await else {
                return;
            };
            let (mut client, mut server) = (client, server);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = down.wait_for(|up| !*up) => {}
            }
        });
    }
}

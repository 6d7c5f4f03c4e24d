//! A tiny keep-alive HTTP/1.1 client for the signed HTTP API, on hyper's connection-level client.
//!
//! One TCP connection, one request at a time, reused for the whole run: what a Pusher server SDK with
//! keep-alive does, and cheap enough that the publisher never becomes the bottleneck. (reqwest is only a
//! dev-dependency; a pooled client would add nothing here.)

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use bytes::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::target;
use crate::protocol::signature::sign_api_request;

/// Largest answer body read (the API answers a few bytes).
const MAX_ANSWER: usize = 1 << 20;

pub struct ApiClient {
    sender: SendRequest<Body>,
    to: SocketAddr,
    host: String,
    key: String,
    secret: String,
}

impl ApiClient {
    pub async fn connect(to: SocketAddr, key: &str, secret: &str) -> anyhow::Result<ApiClient> {
        target::assert_loopback(to)?;
        let sender = Self::open(to).await?;
        Ok(ApiClient { sender, to, host: to.to_string(), key: key.to_owned(), secret: secret.to_owned() })
    }

    async fn open(to: SocketAddr) -> anyhow::Result<SendRequest<Body>> {
        let stream = TcpStream::connect(to).await.with_context(|| format!("connect to {to}"))?;
        stream.set_nodelay(true).context("nodelay")?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.context("HTTP handshake")?;
        // The connection task ends when the server closes or the sender is dropped.
        tokio::spawn(connection);
        Ok(sender)
    }

    /// `POST path` with `body`, signed the way the Pusher SDKs sign; returns the status and the answer.
    pub async fn post_signed(&mut self, path: &str, body: Bytes, timeout: Duration) -> anyhow::Result<(u16, Bytes)> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        let query = sign_api_request(&self.key, &self.secret, "POST", path, &body, &[], now);
        let request = hyper::Request::post(format!("{path}?{query}"))
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .context("build request")?;
        // A server that answers `Connection: close` (some peers do) closes the connection after each
        // answer: open a new one before sending rather than lose the request.
        if self.sender.is_closed() || self.sender.ready().await.is_err() {
            self.sender = Self::open(self.to).await?;
        }
        let exchange = async {
            self.sender.ready().await.context("connection not ready")?;
            let response = self.sender.send_request(request).await.context("send request")?;
            let status = response.status().as_u16();
            let answer =
                axum::body::to_bytes(Body::new(response.into_body()), MAX_ANSWER).await.context("read answer")?;
            anyhow::Ok((status, answer))
        };
        tokio::time::timeout(timeout, exchange).await.context("no answer in time")?
    }
}

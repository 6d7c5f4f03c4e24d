//! Built-in TLS: `wss://` and `https://` on one port, with a certificate made for the test.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

struct Certs {
    dir: std::path::PathBuf,
    cert_der: CertificateDer<'static>,
}

fn make_certs() -> Certs {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let dir = std::env::temp_dir().join(format!("herald-tls-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    Certs { dir, cert_der: cert.der().clone() }
}

async fn tls_connect(port: u16, cert: &CertificateDer<'static>) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

/// A server with TLS on its one port, with a certificate made for the test.
async fn tls_server() -> (Certs, TestServer, u16) {
    let certs = make_certs();
    let port = unused_port();
    let config = format!(
        "[server]\nhost = \"127.0.0.1\"\nport = {port}\n[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        certs.dir.join("cert.pem").display(),
        certs.dir.join("key.pem").display()
    );
    let server = TestServer::start_with_config(port, &config, &[]).await;
    (certs, server, port)
}

#[tokio::test]
async fn serves_wss_and_https_on_one_port() {
    let (certs, _server, port) = tls_server().await;

    // wss://: the Pusher handshake over TLS.
    let tls = tls_connect(port, &certs.cert_der).await;
    let url = format!("wss://localhost:{port}/app/{KEY}?protocol=7");
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls).await.expect("websocket over TLS");
    let first = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap();
    assert!(first.to_text().unwrap().contains("pusher:connection_established"), "{first}");

    // https://: the health check over TLS.
    let mut tls = tls_connect(port, &certs.cert_der).await;
    tls.write_all(b"GET /up HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_string(&mut answer)).await.unwrap().ok();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Plain text on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    plain.write_all(b"GET /up HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut buf = vec![0; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), plain.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert!(!String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
    std::fs::remove_dir_all(&certs.dir).ok();
}

#[tokio::test]
async fn a_bad_certificate_path_stops_start_up_with_a_clear_error() {
    let port = unused_port();
    let dir = std::env::temp_dir().join(format!("herald-tls-bad-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("herald.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nport = {port}\n[server.tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("start")
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("[server.tls] cert") && stderr.contains("/nonexistent/cert.pem"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

/// One HTTPS request, `Connection: close`: the whole answer.
async fn https(port: u16, cert: &CertificateDer<'static>, method: &str, target: &str, body: &str) -> String {
    let mut tls = tls_connect(port, cert).await;
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), tls.read_to_string(&mut answer)).await.unwrap().ok();
    answer
}

/// A held `xhr_streaming` response belongs to its session's task, which writes to the socket
/// itself: over TLS too, the stream opens, carries what `xhr_send` subscribed to, and an event.
#[tokio::test]
async fn an_xhr_streaming_session_works_over_tls() {
    let (certs, _server, port) = tls_server().await;
    let query = "protocol=7&client=js&version=8.4.0&t=1&n=1";
    let base = format!("/pusher/app/{KEY}/7/overtls");

    let mut stream = tls_connect(port, &certs.cert_der).await;
    let open = format!("POST {base}/xhr_streaming?{query} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(open.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut read_until = async |want: &str| {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !String::from_utf8_lossy(&seen).contains(want) {
            let mut chunk = [0u8; 8192];
            let read = tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await;
            match read.unwrap_or_else(|_| panic!("no {want} on the TLS stream: {}", String::from_utf8_lossy(&seen))) {
                Ok(0) | Err(_) => panic!("the TLS stream ended before {want}: {}", String::from_utf8_lossy(&seen)),
                Ok(n) => seen.extend_from_slice(&chunk[..n]),
            }
        }
    };
    read_until("connection_established").await;

    let subscribe = r#"["{\"event\":\"pusher:subscribe\",\"data\":{\"channel\":\"news\"}}"]"#;
    let sent = https(port, &certs.cert_der, "POST", &format!("{base}/xhr_send?{query}"), subscribe).await;
    assert!(sent.starts_with("HTTP/1.1 204"), "{sent}");
    read_until("subscription_succeeded").await;

    let body = r#"{"name":"update","channel":"news","data":"over tls"}"#;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let path = format!("/apps/{APP_ID}/events");
    let signed = herald::protocol::signature::sign_api_request(KEY, SECRET, "POST", &path, body.as_bytes(), &[], now);
    let triggered = https(port, &certs.cert_der, "POST", &format!("{path}?{signed}"), body).await;
    assert!(triggered.starts_with("HTTP/1.1 200"), "{triggered}");
    read_until("over tls").await;
    std::fs::remove_dir_all(&certs.dir).ok();
}

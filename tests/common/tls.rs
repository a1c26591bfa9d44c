//! https and wss for the tests: a certificate authority made at test time
//! (rcgen), leaf pairs it signs written to PEM files, a rustls client that
//! trusts only that CA, and the TLS variants of the raw clients.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, PublicKeyData,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use super::{HttpConn, Response, Server, SseClient, TempDir, Timed, READ_TIMEOUT};

/// A TLS client stream over TCP.
pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

impl Timed for TlsStream {
    fn set_timeout(&mut self, d: Duration) -> std::io::Result<()> {
        self.sock.set_read_timeout(Some(d))
    }
}

/// The key type of a leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    Rsa2048,
}

/// A leaf pair written to PEM files: the chain (leaf, then the CA) and the key.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The leaf's DER, to recognise it on the client side.
    pub der: Vec<u8>,
    /// base64 of the SHA-256 of the leaf key's SubjectPublicKeyInfo: what
    /// Chromium's `--ignore-certificate-errors-spki-list` takes.
    pub spki_sha256: String,
}

/// A test certificate authority and the files it signs, in a temp dir.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub dir: TempDir,
    pub ca_pem: String,
    /// base64 of the SHA-256 of the CA key's SubjectPublicKeyInfo (see [`Leaf`]).
    pub ca_spki_sha256: String,
    n: std::cell::Cell<usize>,
}

/// base64 of the SHA-256 of `spki`.
fn spki_hash(spki: &[u8]) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(spki))
}

impl TestCa {
    #[allow(clippy::new_without_default)]
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "ringcast test CA");
        let key = KeyPair::generate().unwrap();
        let ca_spki_sha256 = spki_hash(&key.subject_public_key_info());
        let issuer = CertifiedIssuer::self_signed(params, key).unwrap();
        let ca_pem = issuer.pem();
        let dir = TempDir::new();
        std::fs::write(dir.path().join("ca.pem"), &ca_pem).unwrap();
        TestCa {
            issuer,
            dir,
            ca_pem,
            ca_spki_sha256,
            n: std::cell::Cell::new(0),
        }
    }

    /// The CA certificate's file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A new leaf for `localhost` and 127.0.0.1 with common name `cn`, signed
    /// by this CA, written to fresh files.
    pub fn leaf(&self, kind: KeyKind, cn: &str) -> Leaf {
        let key = match kind {
            KeyKind::EcdsaP256 => KeyPair::generate().unwrap(),
            KeyKind::Rsa2048 => {
                KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                    .unwrap()
            }
        };
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let n = self.n.get();
        self.n.set(n + 1);
        let cert_path = self.dir.path().join(format!("leaf{n}.pem"));
        let key_path = self.dir.path().join(format!("leaf{n}.key"));
        std::fs::write(&cert_path, format!("{}{}", cert.pem(), self.ca_pem)).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let spki = key.subject_public_key_info();
        use base64::Engine as _;
        use sha2::Digest as _;
        Leaf {
            cert: cert_path,
            key: key_path,
            der: cert.der().to_vec(),
            spki_sha256: base64::engine::general_purpose::STANDARD
                .encode(sha2::Sha256::digest(&spki)),
        }
    }

    /// A rustls client config that trusts this CA only, ALPN `http/1.1`.
    pub fn client(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        let mut cfg = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(cfg)
    }
}

/// Connects and completes a TLS handshake with `cfg` (server name 127.0.0.1).
pub fn tls_connect(addr: SocketAddr, cfg: &Arc<ClientConfig>) -> std::io::Result<TlsStream> {
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(READ_TIMEOUT))?;
    sock.set_nodelay(true)?;
    let name = ServerName::IpAddress(addr.ip().into());
    let conn = ClientConnection::new(cfg.clone(), name).map_err(std::io::Error::other)?;
    let mut stream = StreamOwned::new(conn, sock);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// The DER of the leaf certificate the server presented.
pub fn peer_leaf(stream: &TlsStream) -> Vec<u8> {
    stream
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default()
}

/// One request over a fresh TLS connection; reads one response.
pub fn https_request(
    addr: SocketAddr,
    cfg: &Arc<ClientConfig>,
    raw: &[u8],
) -> std::io::Result<Response> {
    let mut c = HttpConn::over(tls_connect(addr, cfg)?);
    c.stream.write_all(raw)?;
    c.try_read_response()
}

/// `GET path` over https.
pub fn https_get(addr: SocketAddr, cfg: &Arc<ClientConfig>, path: &str) -> Response {
    https_request(
        addr,
        cfg,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap_or_else(|e| panic!("https GET {path}: {e}"))
}

/// Reads `s` until the peer closes (or `timeout`): the bytes, and whether it closed.
pub fn read_to_close(s: &mut impl Read, timeout: Duration) -> (Vec<u8>, bool) {
    let deadline = std::time::Instant::now() + timeout;
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

impl Server {
    /// Starts a server serving https with `leaf`; ready once `/healthz`
    /// answers over TLS with a client trusting `ca`.
    pub fn start_tls(ca: &TestCa, leaf: &Leaf, args: &[&str]) -> Server {
        let mut all = vec![
            "--tls-cert",
            leaf.cert.to_str().unwrap(),
            "--tls-key",
            leaf.key.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        Server::start_probing(&all, Some(ca.client()))
    }

    /// `GET /metrics` over https, as text.
    pub fn metrics_tls(&self, cfg: &Arc<ClientConfig>) -> String {
        https_get(self.addr, cfg, "/metrics").text()
    }

    /// An SSE client over https.
    pub fn sse_tls(
        &self,
        cfg: &Arc<ClientConfig>,
        query: &str,
        last_event_id: Option<&str>,
    ) -> SseClient<TlsStream> {
        let stream = tls_connect(self.addr, cfg).expect("TLS connect for SSE");
        let extra = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        SseClient::open(stream, query, &extra)
    }

    /// A WebSocket over wss (tungstenite over rustls) at `/ws?{query}`, and
    /// the server's answer to the upgrade.
    pub fn ws_tls(
        &self,
        cfg: &Arc<ClientConfig>,
        query: &str,
    ) -> (
        tungstenite::WebSocket<TlsStream>,
        tungstenite::handshake::client::Response,
    ) {
        let stream = tls_connect(self.addr, cfg).expect("TLS connect for wss");
        let url = format!("wss://127.0.0.1:{}/ws?{query}", self.addr.port());
        tungstenite::client::client(url.as_str(), stream)
            .unwrap_or_else(|e| panic!("wss handshake: {e}"))
    }
}

/// The value of a metric line `name` (first series matching `name` exactly,
/// labels included when given), summed over all series that start with it.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

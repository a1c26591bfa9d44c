//! https and wss for the bench's subscribers: rustls's client driven over the
//! same non-blocking `netio` calls and readiness waits as a plain connection.
//! The server's certificate is checked against `--tls-ca FILE`, or not at all
//! with `--tls-insecure` (for 127.0.0.1 runs with a throwaway pair).

use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::Arc;

use monoio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};

use crate::netio;

/// The client config for `--tls-ca` (trust that CA only) or `--tls-insecure`
/// (trust any certificate); ALPN `http/1.1`.
pub fn client_config(ca: Option<&Path>, insecure: bool) -> Result<Arc<ClientConfig>, String> {
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut cfg = match (ca, insecure) {
        (_, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth(),
        (Some(ca), false) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        (None, false) => {
            return Err(
                "https/wss targets need --tls-ca FILE (or --tls-insecure for a test pair)".into(),
            )
        }
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every connection pays a full handshake, as a crowd of new browsers
    // would: no session resumption between the bench's own connections.
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

/// Accepts any server certificate (`--tls-insecure`); signatures are still
/// checked, so the handshake costs what a verifying client's does minus the
/// chain walk.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A subscriber's connection: plain, or TLS over the same descriptor.
pub struct Conn {
    pub fd: RawFd,
    tls: Option<Box<ClientConnection>>,
}

impl Conn {
    pub fn plain(fd: RawFd) -> Conn {
        Conn { fd, tls: None }
    }

    /// Does the client handshake on `sock` (`host`: the URL's host, the
    /// server name to check).
    pub async fn handshake(
        sock: &TcpStream,
        fd: RawFd,
        cfg: &Arc<ClientConfig>,
        host: &str,
    ) -> io::Result<Conn> {
        let name = host
            .rsplit_once(':')
            .map_or(host, |(h, _)| h)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut tls = ClientConnection::new(cfg.clone(), name).map_err(io::Error::other)?;
        while tls.is_handshaking() {
            while tls.wants_write() {
                match tls.write_tls(&mut netio::FdIo(fd)) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock.writable(false).await?,
                    Err(e) => return Err(e),
                }
            }
            if !tls.is_handshaking() {
                break;
            }
            match tls.read_tls(&mut netio::FdIo(fd)) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {
                    tls.process_new_packets()
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock.readable(false).await?,
                Err(e) => return Err(e),
            }
        }
        while tls.wants_write() {
            match tls.write_tls(&mut netio::FdIo(fd)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock.writable(false).await?,
                Err(e) => return Err(e),
            }
        }
        Ok(Conn {
            fd,
            tls: Some(Box::new(tls)),
        })
    }

    /// Reads without waiting; `Ok(0)`: end of stream.
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = &mut self.tls else {
            return netio::recv(self.fd, buf);
        };
        loop {
            tls.process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if tls.read_tls(&mut netio::FdIo(self.fd))? == 0 {
                return Ok(0);
            }
        }
    }

    /// Opened input waits: read before waiting for the socket.
    pub fn has_input(&mut self) -> bool {
        self.tls.as_mut().is_some_and(|tls| {
            tls.process_new_packets().map_or(true, |s| {
                s.plaintext_bytes_to_read() > 0 || s.peer_has_closed()
            })
        })
    }

    /// Writes all of `bytes`, waiting for writability when the socket is full.
    pub async fn write_all(&mut self, sock: &TcpStream, bytes: &[u8]) -> io::Result<()> {
        let Some(tls) = &mut self.tls else {
            return netio::write_all(sock, self.fd, bytes).await;
        };
        tls.writer().write_all(bytes)?;
        while tls.wants_write() {
            match tls.write_tls(&mut netio::FdIo(self.fd)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => sock.writable(false).await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Appends what arrives to `buf` (up to `max` bytes), waiting for at least one.
    pub async fn read_some(
        &mut self,
        sock: &TcpStream,
        buf: &mut Vec<u8>,
        max: usize,
    ) -> io::Result<usize> {
        loop {
            let start = buf.len();
            buf.resize(start + max, 0);
            let r = self.recv(&mut buf[start..]);
            buf.truncate(start + *r.as_ref().unwrap_or(&0));
            match r {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.has_input() {
                        sock.readable(false).await?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

//! TLS with rustls (ring): the pooler's certificate for its clients (`tls_certificate`,
//! `tls_private_key`) and its own TLS to PostgreSQL (`server_tls`,
//! `verify_server_certificate`, `server_tls_ca_file`).

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::Stream;

/// The SSLRequest code of the startup packet.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The acceptor for client TLS; on failure, the config key at fault and why.
pub fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, (&'static str, String)> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            (
                "general.tls_certificate",
                format!("{}: {e}", cert.display()),
            )
        })?;
    if certs.is_empty() {
        let reason = format!("{}: no PEM certificate in the file", cert.display());
        return Err(("general.tls_certificate", reason));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ("general.tls_private_key", format!("{}: {e}", key.display())))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ("general.tls_certificate", e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|e| {
            let reason = format!("{} does not go with {}: {e}", key.display(), cert.display());
            ("general.tls_private_key", reason)
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The CA certificates of a PEM file.
pub fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))?
    {
        let cert = cert.map_err(|e| format!("{}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(roots)
}

/// How the pooler does TLS to PostgreSQL (PgCat's `server_tls`: TLS when the server
/// offers it).
pub struct ServerTls {
    connector: TlsConnector,
    /// verify-full: a server that refuses TLS is an error, not a plain connection.
    verify: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("verify", &self.verify)
            .finish()
    }
}

impl ServerTls {
    /// TLS to servers: certificates checked against `ca_file` (else the system's roots)
    /// when `verify`, else any certificate accepted (`server_tls`,
    /// `verify_server_certificate`, `server_tls_ca_file`).
    pub fn new(verify: bool, ca_file: Option<&Path>) -> Result<Arc<ServerTls>, String> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let config = if verify {
            let roots = match ca_file {
                Some(path) => load_roots(path)?,
                None => system_roots()?,
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
                .with_no_client_auth()
        };
        Ok(Arc::new(ServerTls {
            connector: TlsConnector::from(Arc::new(config)),
            verify,
        }))
    }

    /// Asks the server for TLS (SSLRequest) and does the handshake when it agrees; a
    /// server that declines is used in plain text unless the certificate must be verified.
    pub async fn negotiate(&self, host: &str, mut tcp: TcpStream) -> io::Result<Stream> {
        tcp.write_all(&SSL_REQUEST).await?;
        match tcp.read_u8().await? {
            b'S' => {
                let name = ServerName::try_from(host.to_string())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let tls = self.connector.connect(name, tcp).await?;
                Ok(Stream::TlsToServer(Box::new(tls)))
            }
            b'N' if !self.verify => Ok(Stream::Tcp(tcp)),
            b'N' => Err(io::Error::other(
                "the server does not accept TLS (SSLRequest answered 'N') and verify_server_certificate = true",
            )),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected answer to SSLRequest: byte {other}"),
            )),
        }
    }
}

fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(format!(
            "verify_server_certificate = true but no system CA certificates were found ({:?}); set server_tls_ca_file",
            found.errors
        ));
    }
    Ok(roots)
}

/// `verify_server_certificate = false`: any certificate is accepted (as PgCat does), but
/// the handshake signatures are still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
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
        verify_tls13_signature(
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

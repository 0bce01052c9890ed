//! The Prometheus endpoint's HTTP side, on hyper (HTTP/1.1 and 1.0, keep-alive): `GET` and
//! `HEAD /metrics` answer the page `prometheus::render` makes at each scrape; another method
//! on `/metrics` gets 405 (with `Allow`), another path 404. A request's head must arrive
//! within 10 s and fit 16 KB (else 431 or a close); a connection lives at most 5 minutes.
//! A slow client holds only its own task. Accept errors (out of file descriptors) are
//! retried after a pause that doubles up to a second, so they never spin.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::app::App;

const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const HEAD_MAX: usize = 16 * 1024;
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

/// Serves scrapes until the process ends.
pub async fn serve(listener: TcpListener, app: Arc<App>) {
    let mut pause = Duration::from_millis(10);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        pause = Duration::from_millis(10);
        let app = app.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(&app, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(HEAD_MAX)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
}

fn respond(app: &App, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n".into(),
        );
    }
    match *request.method() {
        Method::GET | Method::HEAD => {
            let mut response = reply(StatusCode::OK, super::prometheus::render(app));
            (response.headers_mut()).insert(
                CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8"
                    .parse()
                    .expect("valid header"),
            );
            response
        }
        _ => {
            let mut response = reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed: GET or HEAD /metrics\n".into(),
            );
            (response.headers_mut()).insert(ALLOW, "GET, HEAD".parse().expect("valid header"));
            response
        }
    }
}

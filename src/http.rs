//! An HTTP/1.1 client for async phases: hyper's client connection over an
//! nginx cosocket ([`crate::io::TcpStream`]), TLS by nginx, connections
//! kept alive in nginx's pool.
//!
//! ```no_run
//! # async fn example() -> kong_rs::Result<()> {
//! use std::time::Duration;
//! let response = kong_rs::http::Request::get("http://127.0.0.1:8080/users/1")?
//!     .header("accept", "application/json")
//!     .timeout(Duration::from_secs(2))
//!     .send()
//!     .await?;
//! if response.status == 200 {
//!     let user: serde_json::Value = serde_json::from_slice(&response.body)
//!         .map_err(|e| kong_rs::Error::msg(format!("user service: {e}")))?;
//!     # let _ = user;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Redirects are not followed; the body is read whole (up to
//! [`Request::max_body`]).

use crate::error::{Error, ErrorKind, Result};
use crate::io::{Connect, TcpStream, timeout};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

/// An HTTP request to send from an async phase.
#[derive(Clone, Debug)]
pub struct Request {
    method: hyper::Method,
    tls: bool,
    host: String,
    port: u16,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    timeout: Duration,
    verify: bool,
    keepalive: Option<(Duration, u32)>,
    max_body: usize,
}

/// An HTTP response, its body read whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The header fields, names in lower case, in the order received.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

impl Request {
    /// A request with `method` (`"GET"`, `"POST"`, ...) to `url`
    /// (`http://` or `https://`).
    ///
    /// # Errors
    /// An invalid method or URL, or another scheme.
    pub fn new(method: &str, url: &str) -> Result<Request> {
        let method = hyper::Method::from_bytes(method.as_bytes())
            .map_err(|e| Error::msg(format!("invalid HTTP method {method:?}: {e}")))?;
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| Error::msg(format!("invalid URL {url:?}: {e}")))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(Error::msg(format!(
                    "URL {url:?}: the scheme must be http or https"
                )));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| Error::msg(format!("URL {url:?} has no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let target = uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
        Ok(Request {
            method,
            tls,
            host,
            port,
            target,
            headers: Vec::new(),
            body: Vec::new(),
            timeout: Duration::from_secs(10),
            verify: true,
            keepalive: Some((Duration::from_secs(60), 32)),
            max_body: 8 * 1024 * 1024,
        })
    }

    /// A GET request to `url`.
    ///
    /// # Errors
    /// As [`Request::new`].
    pub fn get(url: &str) -> Result<Request> {
        Request::new("GET", url)
    }

    /// A POST request to `url`.
    ///
    /// # Errors
    /// As [`Request::new`].
    pub fn post(url: &str) -> Result<Request> {
        Request::new("POST", url)
    }

    /// Adds a header field (`host` is set from the URL unless given).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Request {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The body (sent with a `content-length`).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// The whole exchange's time limit, connect to last body byte
    /// (default 10 s).
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = timeout;
        self
    }

    /// Whether to verify the server's certificate for `https` (default
    /// true; nginx's `lua_ssl_trusted_certificate` holds the trusted CAs).
    pub fn verify(mut self, verify: bool) -> Request {
        self.verify = verify;
        self
    }

    /// Keep the connection alive in nginx's pool for `idle`, at most
    /// `pool_size` per worker and peer (default 60 s, 32); `None` closes it
    /// after the response.
    pub fn keepalive(mut self, keepalive: Option<(Duration, u32)>) -> Request {
        self.keepalive = keepalive;
        self
    }

    /// The largest body accepted (default 8 MiB); a longer one is an error.
    pub fn max_body(mut self, bytes: usize) -> Request {
        self.max_body = bytes;
        self
    }

    fn describe(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!(
            "{} {scheme}://{}:{}{}",
            self.method, self.host, self.port, self.target
        )
    }

    /// Sends the request and reads the response.
    ///
    /// # Errors
    /// Outside an async phase; connect, TLS, send or receive failures, a
    /// response that is not HTTP/1.x, a body over [`Request::max_body`], or
    /// the timeout: the message names the method and URL.
    pub async fn send(self) -> Result<Response> {
        let what = self.describe();
        match timeout(self.timeout, self.exchange()).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) | Err(e) => Err(Error::new(e.kind(), format!("{what}: {e}"))),
        }
    }

    async fn exchange(self) -> Result<Response> {
        let pool = if self.tls {
            format!(
                "kong-rs:https:{}:{}:{}",
                self.host, self.port, self.verify as u8
            )
        } else {
            format!("kong-rs:http:{}:{}", self.host, self.port)
        };
        let options = Connect::new().timeout(self.timeout).pool(pool);
        let mut stream = TcpStream::connect_with(&self.host, self.port, &options).await?;
        if self.tls {
            stream.tls_handshake(Some(&self.host), self.verify).await?;
        }
        let (mut sender, connection) = hyper::client::conn::http1::handshake(stream)
            .await
            .map_err(http_error)?;
        let request = self.hyper_request()?;
        let max_body = self.max_body;
        let exchange = async move {
            let response = sender.send_request(request).await.map_err(http_error)?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max_body)
                .collect()
                .await
                .map_err(|e| Error::new(ErrorKind::Io, format!("reading the body: {e}")))?
                .to_bytes();
            // `sender` is dropped here, which lets the connection finish.
            Ok::<_, Error>((parts, body))
        };
        let mut exchange = pin!(exchange);
        let mut connection = pin!(connection.without_shutdown());
        let mut finished = None;
        // Both futures in this one task: the connection does the I/O, the
        // exchange waits for it.
        let (parts, body) = poll_fn(|cx| {
            if finished.is_none()
                && let Poll::Ready(result) = connection.as_mut().poll(cx)
            {
                finished = Some(result);
            }
            match exchange.as_mut().poll(cx) {
                Poll::Ready(Err(e)) => match &finished {
                    // The connection's error says more than "closed".
                    Some(Err(conn)) => Poll::Ready(Err(http_error_ref(conn))),
                    _ => Poll::Ready(Err(e)),
                },
                other => other,
            }
        })
        .await?;
        let parts_io = match finished {
            Some(result) => result,
            None => connection.await,
        };
        let reusable = parts.version == hyper::Version::HTTP_11
            && !parts
                .headers
                .get_all(hyper::header::CONNECTION)
                .iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        if let (Some((idle, size)), true, Ok(io_parts)) = (self.keepalive, reusable, parts_io)
            && io_parts.read_buf.is_empty()
        {
            io_parts.io.keepalive(idle, size);
        }
        Ok(Response {
            status: parts.status.as_u16(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: body.to_vec(),
        })
    }

    fn hyper_request(&self) -> Result<hyper::Request<Full<Bytes>>> {
        let mut builder = hyper::Request::builder()
            .method(self.method.clone())
            .uri(self.target.as_str());
        let has_host = self
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("host"));
        if !has_host {
            let default_port = if self.tls { 443 } else { 80 };
            let host = if self.host.contains(':') {
                format!("[{}]", self.host)
            } else {
                self.host.clone()
            };
            let value = if self.port == default_port {
                host
            } else {
                format!("{host}:{}", self.port)
            };
            builder = builder.header(hyper::header::HOST, value);
        }
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_slice());
        }
        builder
            .body(Full::new(Bytes::from(self.body.clone())))
            .map_err(|e| Error::msg(format!("invalid request: {e}")))
    }
}

/// hyper's error with its causes (ours name the peer), and our kind.
fn http_error(error: hyper::Error) -> Error {
    http_error_ref(&error)
}

fn http_error_ref(error: &hyper::Error) -> Error {
    let mut message = error.to_string();
    let mut kind = ErrorKind::Io;
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            kind = ErrorKind::Timeout;
        }
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    Error::new(kind, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A one-connection HTTP server answering each request with `answer`.
    fn serve(answers: Vec<&'static str>) -> (u16, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut seen = Vec::new();
            for answer in answers {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = conn.read(&mut buf).unwrap();
                    if n == 0 {
                        return seen;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                seen.push(String::from_utf8_lossy(&request).into_owned());
                conn.write_all(answer.as_bytes()).unwrap();
            }
            seen
        });
        (port, handle)
    }

    #[test]
    fn sends_a_request_and_reads_the_response() {
        let (port, server) = serve(vec![
            "HTTP/1.1 201 Created\r\nx-a: 1\r\ncontent-length: 5\r\n\r\nhello",
        ]);
        let url = format!("http://127.0.0.1:{port}/path?q=1");
        let response = crate::io::block_on(async move {
            Request::post(&url)?
                .header("x-b", "2")
                .body("data")
                .send()
                .await
        })
        .unwrap()
        .unwrap();
        assert_eq!(response.status, 201);
        assert_eq!(response.header("X-A"), Some(&b"1"[..]));
        assert_eq!(response.body, b"hello");
        let seen = server.join().unwrap();
        assert!(
            seen[0].starts_with("POST /path?q=1 HTTP/1.1\r\n"),
            "{}",
            seen[0]
        );
        assert!(
            seen[0].contains(&format!("host: 127.0.0.1:{port}\r\n")),
            "{}",
            seen[0]
        );
        assert!(seen[0].contains("x-b: 2\r\n"), "{}", seen[0]);
    }

    #[test]
    fn a_refused_connection_names_the_peer() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/");
        let err = crate::io::block_on(async move { Request::get(&url)?.send().await })
            .unwrap()
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(text.contains("refused"), "{text}");
    }

    #[test]
    fn a_body_over_the_limit_is_an_error() {
        let (port, _server) = serve(vec![
            "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n0123456789",
        ]);
        let url = format!("http://127.0.0.1:{port}/");
        let err = crate::io::block_on(async move { Request::get(&url)?.max_body(4).send().await })
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("reading the body"), "{err}");
    }

    #[test]
    fn a_slow_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}/");
        let started = std::time::Instant::now();
        let err = crate::io::block_on(async move {
            Request::get(&url)?
                .timeout(Duration::from_millis(200))
                .send()
                .await
        })
        .unwrap()
        .unwrap_err();
        drop(listener);
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn urls_are_checked() {
        assert!(Request::get("ftp://x/").is_err());
        assert!(Request::get("not a url").is_err());
        let request = Request::get("https://example.com").unwrap();
        assert_eq!((request.port, request.target.as_str()), (443, "/"));
    }
}

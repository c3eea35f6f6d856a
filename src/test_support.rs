//! Servers the crate's own tests start (compiled for `cargo test` only).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` on a free 127.0.0.1 port, killed when dropped.
pub(crate) struct RedisServer {
    child: Child,
    pub(crate) port: u16,
}

impl RedisServer {
    /// Starts one, with `extra_args` (e.g. `--requirepass`), and waits until
    /// it accepts connections.
    ///
    /// # Panics
    /// When it cannot start: `scripts/setup` installs redis-server.
    pub(crate) fn start(extra_args: &[&str]) -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no"])
            .args(extra_args)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server could not start: run scripts/setup");
        let server = RedisServer { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not listen on port {port}");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

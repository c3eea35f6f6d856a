//! The operations of [`super::task`] performed with blocking std sockets,
//! for [`block_on`](super::block_on): async plugin code and the clients
//! tested with `cargo test`, against real local servers, without nginx.

use super::task::{Arg, OpKind, OpResult, Reply, Request};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

#[derive(Default)]
pub(crate) struct Sockets {
    open: HashMap<u32, TcpStream>,
}

fn int(arg: &Arg) -> Option<i64> {
    match arg {
        Arg::Int(n) => Some(*n),
        Arg::Num(n) => Some(*n as i64),
        _ => None,
    }
}

fn millis(arg: &Arg) -> Option<Duration> {
    int(arg).map(|ms| Duration::from_millis(ms.max(1) as u64))
}

fn error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => "timeout".into(),
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        _ => e.to_string(),
    }
}

impl Sockets {
    pub(crate) fn perform(&mut self, request: Request) -> OpResult {
        let [a, b, c, _] = &request.args;
        match request.kind {
            OpKind::Connect => {
                let Arg::Text(host) = a else {
                    return Err("bad host".into());
                };
                let port = int(b).ok_or("bad port")? as u16;
                let addr = (host.as_ref(), port)
                    .to_socket_addrs()
                    .map_err(|e| e.to_string())?
                    .next()
                    .ok_or("no address")?;
                let stream = match millis(c) {
                    Some(limit) => TcpStream::connect_timeout(&addr, limit),
                    None => TcpStream::connect(addr),
                }
                .map_err(|e| error(&e))?;
                self.open.insert(request.socket, stream);
                Ok(Reply::Int(0))
            }
            OpKind::Tls => Err("TLS is not available outside nginx (kong_rs::block_on)".into()),
            OpKind::Send => {
                let stream = self.open.get_mut(&request.socket).ok_or("closed")?;
                let Arg::Bytes(data) = a else {
                    return Err("bad data".into());
                };
                stream.set_write_timeout(millis(c)).map_err(|e| error(&e))?;
                stream.write_all(data).map_err(|e| error(&e))?;
                Ok(Reply::Int(data.len() as i64))
            }
            OpKind::SendReceive => {
                let sent = self.perform(Request {
                    kind: OpKind::Send,
                    socket: request.socket,
                    args: [a.clone(), Arg::Nil, c.clone(), Arg::Nil],
                });
                sent?;
                self.perform(Request {
                    kind: OpKind::Receive,
                    socket: request.socket,
                    args: [b.clone(), Arg::Nil, c.clone(), Arg::Nil],
                })
            }
            OpKind::Receive => {
                let stream = self.open.get_mut(&request.socket).ok_or("closed")?;
                let max = int(a).unwrap_or(4096).max(1) as usize;
                stream.set_read_timeout(millis(c)).map_err(|e| error(&e))?;
                let mut buf = vec![0; max];
                let n = stream.read(&mut buf).map_err(|e| error(&e))?;
                if n == 0 {
                    return Err("closed".into());
                }
                buf.truncate(n);
                Ok(Reply::Bytes(buf))
            }
            OpKind::Keepalive | OpKind::Close => {
                self.open.remove(&request.socket);
                Ok(Reply::Done)
            }
            OpKind::CacheGet => Err("kong.cache is not available outside nginx".into()),
            OpKind::LoadConsumer => Err("kong.client is not available outside nginx".into()),
            OpKind::Sleep => {
                let seconds = match a {
                    Arg::Num(s) => *s,
                    Arg::Int(s) => *s as f64,
                    _ => 0.0,
                };
                std::thread::sleep(Duration::from_secs_f64(seconds.max(0.0)));
                Ok(Reply::Done)
            }
        }
    }
}

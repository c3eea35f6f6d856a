//! `rs-file-log`: appends one JSON object per request to a file.

use crate::{Pdk, Plugin, Result};
use base64::Engine as _;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Configuration of `rs-file-log`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct FileLogConfig {
    /// Absolute path of the file to append to; created if missing.
    #[schemars(length(min = 1, max = 4095))]
    pub path: String,
    /// Open the file for every line (so log rotation works) instead of keeping it open.
    #[serde(default)]
    pub reopen: bool,
}

/// Writes one JSON line per request in the log phase: `started_at`,
/// `method`, `path`, `query`, `status`, `latency_ms`, `client_ip`,
/// `route_id`, `service_id`.
///
/// Each line is one `write(2)` on an `O_APPEND` descriptor, so lines from
/// both workers never interleave. A failed write is logged and the handle
/// dropped (the next request reopens it); the request itself never fails
/// because of logging.
#[derive(Debug)]
pub struct FileLog {
    path: PathBuf,
    reopen: bool,
    file: RefCell<Option<File>>,
    /// A write failed part-way (disk full): the file ends with a fragment,
    /// so the next line starts with a newline of its own.
    fragment: std::cell::Cell<bool>,
}

/// Makes write(2) past RLIMIT_FSIZE fail with EFBIG instead of raising
/// SIGXFSZ, whose default action kills the process: nginx does not handle
/// it, and a log plugin must never take its worker down.
///
/// This sets the disposition for the whole worker process, once, when the
/// first rs-file-log instance is built (the Admin API's validation builds
/// one too): every other file write in that worker then also gets EFBIG
/// instead of dying, which is what nginx's own log writes already expect.
/// A signal disposition cannot be scoped to one plugin.
fn ignore_sigxfsz() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: setting a signal's disposition to SIG_IGN has no
        // preconditions; nginx installs no handler for SIGXFSZ.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        }
    });
}

#[crate::plugin]
impl Plugin for FileLog {
    type Config = FileLogConfig;
    type State = ();
    const NAME: &'static str = "rs-file-log";
    const VERSION: &'static str = "0.1.0";
    // Kong's file-log runs at 9.
    const PRIORITY: i32 = 9;

    fn new(config: FileLogConfig) -> Result<Self> {
        let path = Path::new(&config.path);
        if !path.is_absolute() {
            return Err(
                format!("path must be an absolute file path, got {:?}", config.path).into(),
            );
        }
        if config.path.len() > 4095 {
            return Err(format!(
                "path must be at most 4095 bytes (PATH_MAX), got {}",
                config.path.len()
            )
            .into());
        }
        if config.path.contains('\0') || config.path.ends_with('/') {
            return Err(format!("path must name a file, got {:?}", config.path).into());
        }
        ignore_sigxfsz();
        Ok(FileLog {
            path: path.to_path_buf(),
            reopen: config.reopen,
            file: RefCell::new(None),
            fragment: std::cell::Cell::new(false),
        })
    }

    fn log(&self, kong: &mut dyn Pdk, _state: &mut ()) -> Result<()> {
        let mut line = serde_json::to_vec(&entry(kong)?)
            .map_err(|e| crate::Error::with_context("serialising the log entry", e))?;
        line.push(b'\n');
        if let Err(error) = self.write_line(&line) {
            kong.log().err(&format!(
                "could not write to {}: {error}",
                self.path.display()
            ))?;
        }
        Ok(())
    }
}

impl FileLog {
    fn open(&self) -> std::io::Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(&self.path)
    }

    /// Whether the file ends in the middle of a line (it may have been
    /// rotated or emptied since the failed write).
    fn ends_with_fragment(&self) -> bool {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = File::open(&self.path) else {
            return false;
        };
        let mut last = [0u8; 1];
        file.seek(SeekFrom::End(-1)).is_ok()
            && file.read_exact(&mut last).is_ok()
            && last[0] != b'\n'
    }

    fn write_line(&self, line: &[u8]) -> std::io::Result<()> {
        // After a partial write, end the fragment first so this line stays
        // whole (a second worker may still append right after a fragment it
        // does not know about; the window is one failed write).
        let terminated;
        let line = if self.fragment.get() && self.ends_with_fragment() {
            terminated = [b"\n".as_slice(), line].concat();
            &terminated[..]
        } else {
            line
        };
        let written = if self.reopen {
            append(&mut self.open()?, line)
        } else {
            let mut slot = self.file.borrow_mut();
            let file = match slot.as_mut() {
                Some(file) => file,
                None => slot.insert(self.open()?),
            };
            let written = append(file, line);
            if written.is_err() {
                // Reopen on the next request: the path may work again by then.
                *slot = None;
            }
            written
        };
        match written {
            Ok(()) => {
                self.fragment.set(false);
                Ok(())
            }
            Err((partial, error)) => {
                if partial {
                    self.fragment.set(true);
                }
                Err(error)
            }
        }
    }
}

/// Writes all of `line`. On error, a part already written is cut off again
/// when it is still at the end of the file (so no worker's next line is
/// glued to it); the error also says whether a fragment stayed behind.
fn append(file: &mut File, line: &[u8]) -> Result<(), (bool, std::io::Error)> {
    let mut written = 0;
    while written < line.len() {
        let error = match file.write(&line[written..]) {
            Ok(0) => std::io::Error::from(std::io::ErrorKind::WriteZero),
            Ok(n) => {
                written += n;
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => e,
        };
        let fragment = written > 0 && !cut_fragment(file, written);
        return Err((fragment, error));
    }
    Ok(())
}

/// Truncates the last `len` bytes if they are still the end of the file
/// (an `O_APPEND` write leaves the offset at its end). Returns whether it did.
fn cut_fragment(file: &mut File, len: usize) -> bool {
    use std::io::{Seek, SeekFrom};
    let Ok(end) = file.stream_position() else {
        return false;
    };
    let Ok(size) = file.metadata().map(|m| m.len()) else {
        return false;
    };
    let Some(start) = end.checked_sub(len as u64) else {
        return false;
    };
    size == end && file.set_len(start).is_ok() && file.seek(SeekFrom::Start(start)).is_ok()
}

/// Text as a JSON string when it is UTF-8, otherwise `{"base64": "..."}`:
/// lossless either way.
fn bytes_value(bytes: Vec<u8>) -> Value {
    match String::from_utf8(bytes) {
        Ok(text) => Value::String(text),
        Err(e) => {
            json!({ "base64": base64::engine::general_purpose::STANDARD.encode(e.as_bytes()) })
        }
    }
}

fn entry(kong: &mut dyn Pdk) -> Result<Map<String, Value>> {
    let started_at = kong.request().get_start_time()?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    let mut entry = Map::new();
    entry.insert("started_at".into(), json!(started_at));
    entry.insert("method".into(), json!(kong.request().get_method()?));
    entry.insert("path".into(), bytes_value(kong.request().get_path()?));
    entry.insert("query".into(), bytes_value(kong.request().get_raw_query()?));
    entry.insert("status".into(), json!(kong.response().get_status()?));
    entry.insert(
        "latency_ms".into(),
        json!((now_ms - started_at).max(0.0).round() as u64),
    );
    entry.insert("client_ip".into(), json!(kong.client().get_forwarded_ip()?));
    let route = kong.router().get_route()?;
    entry.insert("route_id".into(), json!(route.map(|r| r.id)));
    let service = kong.router().get_service()?;
    entry.insert("service_id".into(), json!(service.map(|s| s.id)));
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LogLevel, MockPdk, run_request};

    /// A file in a temporary directory of its own, both removed when the
    /// test ends.
    struct TempPath(PathBuf);

    impl std::ops::Deref for TempPath {
        type Target = Path;
        fn deref(&self) -> &Path {
            &self.0
        }
    }

    impl AsRef<Path> for TempPath {
        fn as_ref(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
            let _ = std::fs::remove_dir(&self.0); // a directory a test made there
            if let Some(dir) = self.0.parent() {
                let _ = std::fs::remove_dir(dir); // fails while it still holds files
            }
        }
    }

    /// `name` in a directory of its own (tests run in parallel: a shared
    /// directory could be removed under another test).
    fn temp_path(name: &str) -> TempPath {
        let dir = std::env::temp_dir().join(format!(
            "kong-rs-file-log-{}-{}",
            std::process::id(),
            name.replace('.', "-")
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        TempPath(path)
    }

    fn config(path: &Path, reopen: bool) -> FileLogConfig {
        FileLogConfig {
            path: path.to_string_lossy().into_owned(),
            reopen,
        }
    }

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .expect("log file")
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect()
    }

    #[test]
    fn writes_one_json_line_per_request_with_the_required_fields() {
        let path = temp_path("basic.log");
        let plugin = FileLog::new(config(&path, false)).expect("valid");
        for status in [200, 404] {
            let mut kong = MockPdk::get("/a/b?x=1");
            kong.status = status;
            plugin.log(&mut kong, &mut ()).expect("logs");
        }
        let lines = lines(&path);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["method"], "GET");
        assert_eq!(lines[0]["path"], "/a/b");
        assert_eq!(lines[0]["query"], "x=1");
        assert_eq!(lines[0]["status"], 200);
        assert_eq!(lines[1]["status"], 404);
        assert_eq!(lines[0]["client_ip"], "127.0.0.1");
        assert_eq!(lines[0]["route_id"], "00000000-0000-4000-8000-000000000001");
        assert_eq!(
            lines[0]["service_id"],
            "00000000-0000-4000-8000-000000000002"
        );
        assert!(lines[0]["latency_ms"].is_u64());
    }

    #[test]
    fn non_utf8_paths_are_kept_losslessly() {
        let path = temp_path("bytes.log");
        let mut kong = MockPdk::get("/");
        kong.path = b"/caf\xe9".to_vec();
        let flow = run_request::<FileLog>(config(&path, true), &mut kong).expect("runs");
        assert_eq!(flow, crate::Flow::Continue);
        let line = &lines(&path)[0];
        assert_eq!(line["path"]["base64"], "L2NhZuk=");
    }

    #[test]
    fn reopen_follows_rotation_and_kept_handle_does_not() {
        let path = temp_path("rotate.log");
        let rotated = TempPath(path.with_extension("log.1"));
        for reopen in [true, false] {
            let _ = std::fs::remove_file(&path);
            let plugin = FileLog::new(config(&path, reopen)).expect("valid");
            plugin.log(&mut MockPdk::get("/1"), &mut ()).expect("logs");
            std::fs::rename(&path, &rotated).expect("rotate");
            plugin.log(&mut MockPdk::get("/2"), &mut ()).expect("logs");
            assert_eq!(path.exists(), reopen, "reopen={reopen}");
            let rotated_lines = lines(&rotated).len();
            assert_eq!(rotated_lines, if reopen { 1 } else { 2 });
        }
    }

    #[test]
    fn a_write_error_is_logged_and_the_next_write_recovers() {
        let dir = temp_path("missing-dir");
        let path = TempPath(dir.join("x.log"));
        let plugin = FileLog::new(config(&path, false)).expect("valid");
        let mut kong = MockPdk::get("/");
        plugin
            .log(&mut kong, &mut ())
            .expect("logging failure does not fail the request");
        let errors = kong.logs_at(LogLevel::Err);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("could not write"), "{errors:?}");
        std::fs::create_dir_all(&dir).expect("fix the path");
        plugin.log(&mut MockPdk::get("/"), &mut ()).expect("logs");
        assert_eq!(lines(&path).len(), 1, "lines resume once the path works");
    }

    #[test]
    fn constructor_refuses_relative_paths() {
        let err = FileLog::new(FileLogConfig {
            path: "relative.log".into(),
            reopen: false,
        })
        .expect_err("relative refused");
        assert_eq!(
            err.message(),
            "path must be an absolute file path, got \"relative.log\""
        );
    }
}

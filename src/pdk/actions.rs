//! Deferred PDK effects: what a Rust phase asks the Lua side to do once it
//! returns, packed into one byte buffer.
//!
//! Calling from Rust into Lua costs more than most writes, so writes (and,
//! on the FFI fast path, log lines) are appended here and applied by
//! `kong-plugin/kong_rs/actions.lua`, in order, with the real `kong.*`
//! functions. Format, per action: op (u8), name length (u32 LE), name,
//! value length (u32 LE), value.

use crate::error::{Error, Result};
use crate::pdk::LogLevel;

/// An action's kind; the codes are shared with `kong_rs/actions.lua`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Op {
    RespSetHeader = 1,
    RespAddHeader = 2,
    RespClearHeader = 3,
    RespSetStatus = 4,
    SreqSetHeader = 5,
    SreqAddHeader = 6,
    SreqClearHeader = 7,
    SreqSetPath = 8,
    SreqSetRawQuery = 9,
    SreqSetMethod = 10,
    SreqSetRawBody = 11,
    LogErr = 12,
    LogWarn = 13,
    LogNotice = 14,
    LogInfo = 15,
    LogDebug = 16,
}

impl Op {
    const ALL: [Op; 16] = [
        Op::RespSetHeader,
        Op::RespAddHeader,
        Op::RespClearHeader,
        Op::RespSetStatus,
        Op::SreqSetHeader,
        Op::SreqAddHeader,
        Op::SreqClearHeader,
        Op::SreqSetPath,
        Op::SreqSetRawQuery,
        Op::SreqSetMethod,
        Op::SreqSetRawBody,
        Op::LogErr,
        Op::LogWarn,
        Op::LogNotice,
        Op::LogInfo,
        Op::LogDebug,
    ];

    /// The op that logs at `level`.
    pub(crate) fn log(level: LogLevel) -> Op {
        match level {
            LogLevel::Err => Op::LogErr,
            LogLevel::Warn => Op::LogWarn,
            LogLevel::Notice => Op::LogNotice,
            LogLevel::Info => Op::LogInfo,
            LogLevel::Debug => Op::LogDebug,
        }
    }

    fn is_log(self) -> bool {
        self as u8 >= Op::LogErr as u8
    }
}

/// One decoded action: op, name, value.
pub(crate) type Action<'a> = (Op, &'a [u8], &'a [u8]);

/// A buffer of pending actions.
#[derive(Debug, Default)]
pub(crate) struct Actions {
    buffer: Vec<u8>,
}

impl Actions {
    /// Appends an action.
    pub(crate) fn push(&mut self, op: Op, name: &[u8], value: &[u8]) -> Result<()> {
        let too_long = |_| Error::msg("a PDK argument is longer than 4 GiB");
        let name_len = u32::try_from(name.len()).map_err(too_long)?;
        let value_len = u32::try_from(value.len()).map_err(too_long)?;
        self.buffer.reserve(9 + name.len() + value.len());
        self.buffer.push(op as u8);
        self.buffer.extend_from_slice(&name_len.to_le_bytes());
        self.buffer.extend_from_slice(name);
        self.buffer.extend_from_slice(&value_len.to_le_bytes());
        self.buffer.extend_from_slice(value);
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buffer
    }

    pub(crate) fn clear(&mut self) {
        self.buffer.clear();
    }

    /// Takes the buffer, leaving this one empty.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buffer)
    }

    /// Keeps only the log lines: when a phase fails, its writes are dropped
    /// (the request is answered 500) but what it logged is still worth
    /// seeing.
    pub(crate) fn retain_logs(&mut self) -> Result<()> {
        let mut kept = Actions::default();
        for (op, name, value) in decode(&self.buffer)? {
            if op.is_log() {
                kept.push(op, name, value)?;
            }
        }
        *self = kept;
        Ok(())
    }
}

/// Splits a buffer into its actions.
///
/// # Errors
/// When the buffer is not in the format above.
pub(crate) fn decode(buffer: &[u8]) -> Result<Vec<Action<'_>>> {
    let corrupt = || Error::msg("corrupt action buffer");
    let mut actions = Vec::new();
    let mut rest = buffer;
    while let Some((&code, tail)) = rest.split_first() {
        let op = *Op::ALL
            .get(usize::from(code).wrapping_sub(1))
            .ok_or_else(corrupt)?;
        let (name, tail) = take_field(tail).ok_or_else(corrupt)?;
        let (value, tail) = take_field(tail).ok_or_else(corrupt)?;
        actions.push((op, name, value));
        rest = tail;
    }
    Ok(actions)
}

fn take_field(buffer: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = buffer.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_keeps_only_logs_on_failure() {
        let mut actions = Actions::default();
        actions
            .push(Op::SreqSetHeader, b"x-a", b"\xff\x00v")
            .unwrap();
        actions.push(Op::LogErr, b"", b"oops").unwrap();
        actions.push(Op::RespSetStatus, b"", b"418").unwrap();
        let decoded = decode(actions.as_bytes()).unwrap();
        assert_eq!(
            decoded[0],
            (Op::SreqSetHeader, &b"x-a"[..], &b"\xff\x00v"[..])
        );
        assert_eq!(decoded.len(), 3);
        actions.retain_logs().unwrap();
        assert_eq!(
            decode(actions.as_bytes()).unwrap(),
            [(Op::LogErr, &b""[..], &b"oops"[..])]
        );
    }

    #[test]
    fn corrupt_buffers_are_errors_not_panics() {
        for corrupt in [
            &[0u8][..],
            &[1, 9, 0, 0, 0, b'x'],
            &[99, 0, 0, 0, 0, 0, 0, 0, 0],
        ] {
            assert!(decode(corrupt).is_err(), "{corrupt:?}");
        }
    }
}

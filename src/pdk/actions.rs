//! Deferred PDK effects: what a Rust phase asks the Lua side to do once it
//! returns, packed into one byte buffer.
//!
//! Calling from Rust into Lua costs more than most writes, so writes are
//! appended here and applied by `kong-plugin/kong_rs/actions.lua`, in
//! order, with the real `kong.*` functions. Format, per action: op (u8),
//! name length (u32 LE), name, value length (u32 LE), value.
//!
//! [`OPS`] is the only definition of the op codes: the module hands it to
//! the Lua side (`ops` in the module table), which generates its applier
//! from it, so the two languages cannot disagree.

use crate::error::{Error, Result};

/// An action's kind.
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
}

/// Which of an action's fields the `kong.*` function takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Args {
    /// `f(name, value)`
    NameValue,
    /// `f(name)`
    Name,
    /// `f(value)`
    Value,
    /// `f(tonumber(value))`
    Status,
}

impl Args {
    /// The name the Lua side knows it by.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Args::NameValue => "name_value",
            Args::Name => "name",
            Args::Value => "value",
            Args::Status => "status",
        }
    }
}

/// Every op, in code order: the op, the `kong.*` function that performs
/// it (below `kong`), and its arguments.
pub(crate) const OPS: [(Op, &str, Args); 11] = [
    (Op::RespSetHeader, "response.set_header", Args::NameValue),
    (Op::RespAddHeader, "response.add_header", Args::NameValue),
    (Op::RespClearHeader, "response.clear_header", Args::Name),
    (Op::RespSetStatus, "response.set_status", Args::Status),
    (
        Op::SreqSetHeader,
        "service.request.set_header",
        Args::NameValue,
    ),
    (
        Op::SreqAddHeader,
        "service.request.add_header",
        Args::NameValue,
    ),
    (
        Op::SreqClearHeader,
        "service.request.clear_header",
        Args::Name,
    ),
    (Op::SreqSetPath, "service.request.set_path", Args::Value),
    (
        Op::SreqSetRawQuery,
        "service.request.set_raw_query",
        Args::Value,
    ),
    (Op::SreqSetMethod, "service.request.set_method", Args::Value),
    (
        Op::SreqSetRawBody,
        "service.request.set_raw_body",
        Args::Value,
    ),
];

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

    /// Takes the buffer, leaving this one empty.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buffer)
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
        let (op, _, _) = *OPS
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
    fn round_trips_bytes_unchanged() {
        let mut actions = Actions::default();
        actions
            .push(Op::SreqSetHeader, b"x-a", b"\xff\x00v")
            .unwrap();
        actions.push(Op::RespSetStatus, b"", b"418").unwrap();
        let buffer = actions.take();
        let decoded = decode(&buffer).unwrap();
        assert_eq!(
            decoded,
            [
                (Op::SreqSetHeader, &b"x-a"[..], &b"\xff\x00v"[..]),
                (Op::RespSetStatus, &b""[..], &b"418"[..]),
            ]
        );
        assert!(actions.is_empty());
    }

    #[test]
    fn the_table_is_in_code_order() {
        for (i, (op, _, _)) in OPS.iter().enumerate() {
            assert_eq!(*op as usize, i + 1, "{op:?}");
        }
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

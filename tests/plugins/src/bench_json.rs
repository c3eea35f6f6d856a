//! The `json-validate` benchmark rules, checked while scanning the body:
//! shared verbatim by `rs-bench-json` and the plugin-server model
//! (`benches/plugin-server`, which includes this file), so both run the same
//! Rust code. Depends only on serde_json, for rare numbers.
//!
//! One pass over the bytes with a strict JSON scanner that keeps, of each
//! member the rules look at, only its [`Shape`]; everything else is checked
//! and skipped, and nothing is allocated unless a key or checked string holds
//! an escape. The answer is the one given by parsing into a
//! `serde_json::Value` and checking that (the tests and the `request_json`
//! fuzz target compare the two), which pins down the corners:
//! - grammar of RFC 8259, whitespace is space, tab, CR and LF only, nothing
//!   but whitespace after the document;
//! - nesting deeper than serde_json's limit (128 levels) is refused;
//! - control characters in strings, bad escapes and unpaired surrogate
//!   escapes are refused; JSON text must be UTF-8;
//! - an integer is an `i64` when it fits (serde_json reads `-0` as a float),
//!   a number too large for an `f64` is refused: numbers with an exponent or
//!   more than 300 digits are handed to serde_json itself to decide that;
//! - duplicate keys keep the last value, `null` is a value of its own.

/// The allowed `plan` values.
pub const PLANS: [&str; 3] = ["free", "pro", "enterprise"];

/// What the rules need of a JSON value.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Shape {
    /// The member is not there.
    #[default]
    Absent,
    Null,
    Bool,
    Int(i64),
    Float,
    /// Character count, and whether it is one of the plans.
    Str(usize, bool),
    Array(usize),
    Object,
}

/// The members the rules look at; `user_*` are the fields of `user` when it
/// is an object.
#[derive(Debug, Default)]
struct Doc {
    id: Shape,
    user_name: Shape,
    user_email: Shape,
    user_age: Shape,
    plan: Shape,
    quantity: Shape,
    tags: Shape,
    items: Shape,
    notes: Shape,
    active: Shape,
}

/// The body is not valid JSON.
struct Invalid;

type Scan<T> = Result<T, Invalid>;

/// serde_json refuses the 128th level of nesting (its `remaining_depth`
/// starts at 128 and may not reach 0).
const MAX_DEPTH: u32 = 127;

/// Numbers with more digits than this go to serde_json, which refuses those
/// beyond `f64::MAX` (the fast path only tells integers from floats).
const FAST_NUMBER_DIGITS: usize = 300;

/// A string's content as it appears between the quotes.
struct RawStr<'a> {
    bytes: &'a [u8],
    escaped: bool,
}

impl RawStr<'_> {
    /// The decoded text when it holds escapes, borrowed bytes otherwise.
    fn text(&self) -> Scan<std::borrow::Cow<'_, [u8]>> {
        if !self.escaped {
            return Ok(std::borrow::Cow::Borrowed(self.bytes));
        }
        let mut out = Vec::with_capacity(self.bytes.len());
        let mut rest = self.bytes;
        while let Some(at) = rest.iter().position(|&b| b == b'\\') {
            out.extend_from_slice(&rest[..at]);
            let (c, len) = escape_at(&rest[at..]).ok_or(Invalid)?;
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            rest = &rest[at + len..];
        }
        out.extend_from_slice(rest);
        Ok(std::borrow::Cow::Owned(out))
    }

    /// The string's shape: characters, and whether it is a plan.
    fn shape(&self) -> Scan<Shape> {
        let text = self.text()?;
        // UTF-8 was checked up front: count every byte but continuations.
        let chars = text.iter().filter(|&&b| (b as i8) >= -0x40).count();
        Ok(Shape::Str(
            chars,
            PLANS.iter().any(|p| p.as_bytes() == &*text),
        ))
    }
}

/// The escape `bytes` start with (at its backslash): the character it stands
/// for and its length in bytes; `None` for what serde_json refuses: an
/// unknown escape, bad hex digits, a surrogate escape without its pair.
fn escape_at(bytes: &[u8]) -> Option<(char, usize)> {
    let simple = match *bytes.get(1)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let high = hex4(bytes.get(2..6)?)?;
            return match high {
                0xDC00..=0xDFFF => None,
                0xD800..=0xDBFF => {
                    if bytes.get(6..8)? != b"\\u" {
                        return None;
                    }
                    let low = hex4(bytes.get(8..12)?)?;
                    if !(0xDC00..=0xDFFF).contains(&low) {
                        return None;
                    }
                    let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                    Some((char::from_u32(code)?, 12))
                }
                _ => Some((char::from_u32(high)?, 6)),
            };
        }
        _ => return None,
    };
    Some((simple, 2))
}

/// Four hex digits.
fn hex4(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |acc, &d| {
        let v = (d as char).to_digit(16)?;
        Some(acc << 4 | v)
    })
}

/// Where the first `"`, `\\` or control character (the bytes that end a
/// plain run of string content) lies in `chunk`: bit `i` of the mask is
/// byte `i`.
#[cfg(target_arch = "x86_64")]
#[inline]
fn string_stops(chunk: &[u8; 16]) -> u32 {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of the x86_64 baseline, and the unaligned load
    // reads exactly the 16 bytes `chunk` borrows.
    unsafe {
        let v = _mm_loadu_si128(chunk.as_ptr().cast());
        let quote = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        // v < 0x20 (unsigned) exactly when min(v, 0x1f) == v.
        let control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
        _mm_movemask_epi8(_mm_or_si128(_mm_or_si128(quote, backslash), control)) as u32
    }
}

/// Portable twin of the SSE2 version: the same mask, a byte at a time.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn string_stops(chunk: &[u8; 16]) -> u32 {
    chunk.iter().enumerate().fold(0, |mask, (i, &b)| {
        mask | (u32::from(b == b'"' || b == b'\\' || b < 0x20) << i)
    })
}

struct Scanner<'a> {
    src: &'a [u8],
    pos: usize,
    depth: u32,
}

impl<'a> Scanner<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    /// Consumes `byte` (after whitespace).
    #[inline]
    fn expect(&mut self, byte: u8) -> Scan<()> {
        self.ws();
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Invalid)
        }
    }

    fn enter(&mut self) -> Scan<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Invalid);
        }
        self.pos += 1;
        Ok(())
    }

    /// After a member or element: `true` for a comma, `false` for `close`.
    #[inline]
    fn next_or_close(&mut self, close: u8) -> Scan<bool> {
        self.ws();
        match self.peek() {
            Some(b',') => {
                self.pos += 1;
                Ok(true)
            }
            Some(b) if b == close => {
                self.pos += 1;
                self.depth -= 1;
                Ok(false)
            }
            _ => Err(Invalid),
        }
    }

    /// A string, the opening quote under `pos`: validated, not decoded.
    fn string(&mut self) -> Scan<RawStr<'a>> {
        let start = self.pos + 1;
        let src = self.src;
        let mut pos = start;
        let mut escaped = false;
        loop {
            // Sixteen bytes at a time up to the next quote, backslash or
            // control character; the tail a byte at a time.
            while let Some(chunk) = src.get(pos..pos + 16) {
                let chunk: &[u8; 16] = chunk.try_into().map_err(|_| Invalid)?;
                let stops = string_stops(chunk);
                if stops != 0 {
                    pos += stops.trailing_zeros() as usize;
                    break;
                }
                pos += 16;
            }
            match src.get(pos) {
                Some(b'"') => {
                    self.pos = pos + 1;
                    return Ok(RawStr {
                        bytes: &src[start..pos],
                        escaped,
                    });
                }
                Some(b'\\') => {
                    escaped = true;
                    let (_, len) = escape_at(&src[pos..]).ok_or(Invalid)?;
                    pos += len;
                }
                Some(&b) if b >= 0x20 => pos += 1,
                _ => return Err(Invalid),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - start
    }

    /// A number: `Int` when it is an integer that fits an `i64`.
    fn number(&mut self) -> Scan<Shape> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let int_start = self.pos;
        let int_digits = self.digits();
        if int_digits == 0 || (int_digits > 1 && self.src[int_start] == b'0') {
            return Err(Invalid);
        }
        let mut digits = int_digits;
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            let fraction = self.digits();
            if fraction == 0 {
                return Err(Invalid);
            }
            digits += fraction;
            integer = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(Invalid);
            }
            return self.rare_number(start);
        }
        if digits > FAST_NUMBER_DIGITS {
            return self.rare_number(start);
        }
        if !integer {
            return Ok(Shape::Float);
        }
        // An integer: as an i64 if it fits (serde_json: u64 when positive,
        // i64 when negative, f64 otherwise and for -0).
        let magnitude = self.src[int_start..int_start + int_digits]
            .iter()
            .try_fold(0u64, |acc, &d| {
                acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            });
        Ok(match magnitude {
            Some(0) if negative => Shape::Float,
            Some(m) if negative => 0i64
                .checked_sub_unsigned(m)
                .map_or(Shape::Float, Shape::Int),
            Some(m) => i64::try_from(m).map_or(Shape::Float, Shape::Int),
            None => Shape::Float,
        })
    }

    /// A number the fast path does not decide: serde_json parses it.
    #[cold]
    fn rare_number(&self, start: usize) -> Scan<Shape> {
        match serde_json::from_slice::<f64>(&self.src[start..self.pos]) {
            Ok(_) => Ok(Shape::Float),
            Err(_) => Err(Invalid),
        }
    }

    fn literal(&mut self, word: &[u8], shape: Shape) -> Scan<Shape> {
        if self.src.get(self.pos..self.pos + word.len()) == Some(word) {
            self.pos += word.len();
            Ok(shape)
        } else {
            Err(Invalid)
        }
    }

    /// Any value (after whitespace), with what the rules need of it.
    fn value(&mut self) -> Scan<Shape> {
        self.ws();
        match self.peek() {
            Some(b'"') => self.string()?.shape(),
            Some(b'[') => self.array(),
            Some(b'{') => {
                self.skip_object()?;
                Ok(Shape::Object)
            }
            _ => self.scalar(),
        }
    }

    /// Any value (after whitespace), checked and dropped.
    fn skip(&mut self) -> Scan<()> {
        self.ws();
        match self.peek() {
            Some(b'"') => self.string().map(drop),
            Some(b'[') => self.array().map(drop),
            Some(b'{') => self.skip_object(),
            _ => self.scalar().map(drop),
        }
    }

    fn scalar(&mut self) -> Scan<Shape> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true", Shape::Bool),
            Some(b'f') => self.literal(b"false", Shape::Bool),
            Some(b'n') => self.literal(b"null", Shape::Null),
            _ => Err(Invalid),
        }
    }

    /// An array, `[` under `pos`: its length.
    fn array(&mut self) -> Scan<Shape> {
        self.enter()?;
        self.ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(Shape::Array(0));
        }
        let mut len = 0;
        loop {
            self.skip()?;
            len += 1;
            if !self.next_or_close(b']')? {
                return Ok(Shape::Array(len));
            }
        }
    }

    /// An object, `{` under `pos`, with `member` called on each key (its
    /// value still to be read); a later duplicate key simply overwrites.
    fn object(&mut self, mut member: impl FnMut(&mut Self, RawStr<'a>) -> Scan<()>) -> Scan<()> {
        self.enter()?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(());
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(Invalid);
            }
            let key = self.string()?;
            self.expect(b':')?;
            member(self, key)?;
            if !self.next_or_close(b'}')? {
                return Ok(());
            }
        }
    }

    fn skip_object(&mut self) -> Scan<()> {
        self.object(|s, _| s.skip())
    }

    /// The top-level object's members.
    fn document(&mut self, doc: &mut Doc) -> Scan<()> {
        self.object(|s, key| {
            let slot = match &*key.text()? {
                b"id" => &mut doc.id,
                b"plan" => &mut doc.plan,
                b"quantity" => &mut doc.quantity,
                b"tags" => &mut doc.tags,
                b"items" => &mut doc.items,
                b"notes" => &mut doc.notes,
                b"active" => &mut doc.active,
                b"user" => return s.user(doc),
                _ => return s.skip(),
            };
            *slot = s.value()?;
            Ok(())
        })
    }

    /// `user`: its three fields when it is an object, none otherwise.
    fn user(&mut self, doc: &mut Doc) -> Scan<()> {
        (doc.user_name, doc.user_email, doc.user_age) =
            (Shape::Absent, Shape::Absent, Shape::Absent);
        self.ws();
        if self.peek() != Some(b'{') {
            return self.skip();
        }
        self.object(|s, key| {
            let slot = match &*key.text()? {
                b"name" => &mut doc.user_name,
                b"email" => &mut doc.user_email,
                b"age" => &mut doc.user_age,
                _ => return s.skip(),
            };
            *slot = s.value()?;
            Ok(())
        })
    }
}

/// Scans the document: `None` when it is valid JSON but not an object.
fn scan(body: &[u8]) -> Scan<Option<Doc>> {
    let mut scanner = Scanner {
        src: body,
        pos: 0,
        depth: 0,
    };
    scanner.ws();
    let doc = if scanner.peek() == Some(b'{') {
        let mut doc = Doc::default();
        scanner.document(&mut doc)?;
        Some(doc)
    } else {
        scanner.skip()?;
        None
    };
    scanner.ws();
    if scanner.pos != body.len() {
        return Err(Invalid);
    }
    Ok(doc)
}

/// The ten rules, in order, on a request body: `Ok(None)` when it passes,
/// `Ok(Some(violation))` for the first rule it breaks, `Err` when it is not
/// valid JSON or not an object.
///
/// # Errors
/// `"body must be valid JSON"` or `"body must be a JSON object"`.
pub fn body_violation(body: &[u8]) -> Result<Option<&'static str>, &'static str> {
    // JSON text is UTF-8: checked once, fast, so strings need no check of
    // their own and characters can be counted by their lead bytes.
    if std::str::from_utf8(body).is_err() {
        return Err("body must be valid JSON");
    }
    let doc = match scan(body) {
        Ok(Some(doc)) => doc,
        Ok(None) => return Err("body must be a JSON object"),
        Err(Invalid) => return Err("body must be valid JSON"),
    };
    let str_len = |s: Shape| match s {
        Shape::Str(n, _) => Some(n),
        _ => None,
    };
    let int_in =
        |s: Shape, low: i64, high: i64| matches!(s, Shape::Int(n) if (low..=high).contains(&n));
    let checks = [
        (
            "id must be a 36-character string",
            str_len(doc.id) == Some(36),
        ),
        (
            "user.name must be 1-64 characters",
            str_len(doc.user_name).is_some_and(|n| (1..=64).contains(&n)),
        ),
        (
            "user.email must be 3-254 characters",
            str_len(doc.user_email).is_some_and(|n| (3..=254).contains(&n)),
        ),
        (
            "user.age must be an integer 13-130",
            int_in(doc.user_age, 13, 130),
        ),
        (
            "plan must be free, pro or enterprise",
            matches!(doc.plan, Shape::Str(_, true)),
        ),
        (
            "quantity must be an integer 1-100",
            int_in(doc.quantity, 1, 100),
        ),
        (
            "tags must be an array of at most 10",
            matches!(doc.tags, Shape::Array(n) if n <= 10),
        ),
        (
            "items must be an array of 1-50",
            matches!(doc.items, Shape::Array(n) if (1..=50).contains(&n)),
        ),
        (
            "notes must be at most 1024 characters",
            match doc.notes {
                Shape::Absent => true,
                Shape::Str(n, _) => n <= 1024,
                _ => false,
            },
        ),
        ("active must be a boolean", doc.active == Shape::Bool),
    ];
    Ok(checks
        .iter()
        .find(|(_, ok)| !ok)
        .map(|(message, _)| *message))
}

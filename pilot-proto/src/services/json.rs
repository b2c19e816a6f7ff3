//! A syntax check for JSON text (RFC 8259), without a JSON library.
//!
//! Data exchange promises its receiver that a JSON message parses; this
//! checks that, and nothing more (no values are built). It does not recurse:
//! open containers live in a bit stack (one bit per level: object or array),
//! so hostile nesting costs neither native stack nor heap, and the depth is
//! bounded anyway because the application's own parser probably recurses.
//!
//! Strictly RFC 8259: one value of any type at the top level, whitespace
//! only space, tab, LF and CR, no comments, no trailing commas, no leading
//! zeros, no `NaN`. `\u` escapes are checked for four hex digits but not
//! paired into surrogates (the RFC grammar allows a lone surrogate). Object
//! keys may repeat (the RFC leaves that to the application).

use core::fmt;

/// The deepest nesting of arrays and objects accepted by [`validate`].
pub const MAX_DEPTH: usize = 64;

/// The deepest nesting [`validate_with_depth`] can check.
pub const DEPTH_LIMIT: usize = 128;

/// Where and why a text is not JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JsonError {
    /// Byte offset of the problem.
    pub at: usize,
    /// What is wrong there.
    pub reason: JsonReason,
}

/// What is wrong with a JSON text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JsonReason {
    /// The text ends inside a value.
    UnexpectedEnd,
    /// A byte that cannot start or continue anything here.
    UnexpectedByte,
    /// Arrays and objects nest deeper than allowed.
    TooDeep,
    /// A backslash escape that JSON does not define.
    BadEscape,
    /// A raw control character (below U+0020) inside a string.
    ControlInString,
    /// A number that breaks the grammar (`01`, `1.`, `-`, `1e`).
    BadNumber,
    /// More text after the value.
    TrailingData,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.reason {
            JsonReason::UnexpectedEnd => "unexpected end of text",
            JsonReason::UnexpectedByte => "unexpected character",
            JsonReason::TooDeep => "nested too deeply",
            JsonReason::BadEscape => "invalid escape",
            JsonReason::ControlInString => "control character in string",
            JsonReason::BadNumber => "invalid number",
            JsonReason::TrailingData => "data after the value",
        };
        write!(f, "invalid JSON at byte {}: {what}", self.at)
    }
}

/// Checks that `text` is one JSON value nested at most [`MAX_DEPTH`] deep.
pub fn validate(text: &str) -> Result<(), JsonError> {
    validate_with_depth(text, MAX_DEPTH)
}

/// Checks that `text` is one JSON value nested at most `max_depth` deep
/// (itself at most [`DEPTH_LIMIT`]).
pub fn validate_with_depth(text: &str, max_depth: usize) -> Result<(), JsonError> {
    let max_depth = max_depth.min(DEPTH_LIMIT);
    let mut p = Parser {
        b: text.as_bytes(),
        i: 0,
    };
    // Bit d set: the container at depth d + 1 is an object.
    let mut stack: u128 = 0;
    let mut depth = 0usize;
    'value: loop {
        p.ws();
        match p.peek() {
            None => return p.fail(JsonReason::UnexpectedEnd),
            Some(open @ (b'{' | b'[')) => {
                if depth >= max_depth {
                    return p.fail(JsonReason::TooDeep);
                }
                let is_object = open == b'{';
                if is_object {
                    stack |= 1 << depth;
                } else {
                    stack &= !(1 << depth);
                }
                depth += 1;
                p.i += 1;
                p.ws();
                let close = if is_object { b'}' } else { b']' };
                if p.peek() == Some(close) {
                    p.i += 1;
                    depth -= 1;
                } else {
                    if is_object {
                        p.key()?;
                    }
                    continue 'value;
                }
            }
            Some(b'"') => p.string()?,
            Some(b't') => p.literal(b"true")?,
            Some(b'f') => p.literal(b"false")?,
            Some(b'n') => p.literal(b"null")?,
            Some(b'-' | b'0'..=b'9') => p.number()?,
            Some(_) => return p.fail(JsonReason::UnexpectedByte),
        }
        // A value just ended: close containers until one wants another.
        loop {
            p.ws();
            if depth == 0 {
                if p.i < p.b.len() {
                    return p.fail(JsonReason::TrailingData);
                }
                return Ok(());
            }
            let in_object = (stack >> (depth - 1)) & 1 == 1;
            match p.peek() {
                None => return p.fail(JsonReason::UnexpectedEnd),
                Some(b',') => {
                    p.i += 1;
                    if in_object {
                        p.ws();
                        p.key()?;
                    }
                    continue 'value;
                }
                Some(b'}') if in_object => {}
                Some(b']') if !in_object => {}
                Some(_) => return p.fail(JsonReason::UnexpectedByte),
            }
            p.i += 1;
            depth -= 1;
        }
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn fail<T>(&self, reason: JsonReason) -> Result<T, JsonError> {
        Err(JsonError { at: self.i, reason })
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// An object key and its colon; the value follows.
    fn key(&mut self) -> Result<(), JsonError> {
        match self.peek() {
            None => return self.fail(JsonReason::UnexpectedEnd),
            Some(b'"') => self.string()?,
            Some(_) => return self.fail(JsonReason::UnexpectedByte),
        }
        self.ws();
        match self.peek() {
            None => self.fail(JsonReason::UnexpectedEnd),
            Some(b':') => {
                self.i += 1;
                Ok(())
            }
            Some(_) => self.fail(JsonReason::UnexpectedByte),
        }
    }

    /// A string, starting at its opening quote.
    fn string(&mut self) -> Result<(), JsonError> {
        self.i += 1;
        loop {
            match self.peek() {
                None => return self.fail(JsonReason::UnexpectedEnd),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        None => return self.fail(JsonReason::UnexpectedEnd),
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
                            self.i += 1;
                        }
                        Some(b'u') => {
                            self.i += 1;
                            for _ in 0..4 {
                                match self.peek() {
                                    None => return self.fail(JsonReason::UnexpectedEnd),
                                    Some(c) if c.is_ascii_hexdigit() => self.i += 1,
                                    Some(_) => return self.fail(JsonReason::BadEscape),
                                }
                            }
                        }
                        Some(_) => return self.fail(JsonReason::BadEscape),
                    }
                }
                Some(c) if c < 0x20 => return self.fail(JsonReason::ControlInString),
                // The input is a `str`, so multi-byte characters are whole.
                Some(_) => self.i += 1,
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), JsonError> {
        let end = self.i + word.len();
        match self.b.get(self.i..end) {
            Some(w) if w == word => {
                self.i = end;
                Ok(())
            }
            _ if self.b.len() < end && word.starts_with(&self.b[self.i..]) => {
                self.i = self.b.len();
                self.fail(JsonReason::UnexpectedEnd)
            }
            _ => self.fail(JsonReason::UnexpectedByte),
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Result<(), JsonError> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return self.fail(JsonReason::BadNumber),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return self.fail(JsonReason::BadNumber);
            }
            self.digits();
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return self.fail(JsonReason::BadNumber);
            }
            self.digits();
        }
        Ok(())
    }

    fn digits(&mut self) {
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;

    #[test]
    fn valid_texts() {
        for text in [
            "0",
            "-0",
            "1",
            "-12.5e+3",
            "3E-2",
            "1e9",
            "0.0",
            "true",
            "false",
            "null",
            r#""""#,
            r#""a\"b\\c\/d\b\f\n\r\t\u00e9\uD834""#,
            "\"héllo ✓\"",
            "[]",
            "{}",
            " \t\r\n[ 1 , 2 ] \n",
            r#"{"a":1,"b":[true,false,null],"c":{"d":"e"},"a":2}"#,
            r#"[{}, [], [[]], {"":""}]"#,
        ] {
            assert_eq!(validate(text), Ok(()), "{text:?}");
        }
    }

    #[test]
    fn invalid_texts() {
        use JsonReason::*;
        for (text, at, reason) in [
            ("", 0, UnexpectedEnd),
            ("   ", 3, UnexpectedEnd),
            ("[", 1, UnexpectedEnd),
            ("[1", 2, UnexpectedEnd),
            ("[1,", 3, UnexpectedEnd),
            ("{", 1, UnexpectedEnd),
            (r#"{"a""#, 4, UnexpectedEnd),
            (r#"{"a":"#, 5, UnexpectedEnd),
            (r#""abc"#, 4, UnexpectedEnd),
            ("tru", 3, UnexpectedEnd),
            ("[1,]", 3, UnexpectedByte),
            (r#"{"a":1,}"#, 7, UnexpectedByte),
            ("{1:2}", 1, UnexpectedByte),
            (r#"{"a" 1}"#, 5, UnexpectedByte),
            ("[1 2]", 3, UnexpectedByte),
            ("[1}", 2, UnexpectedByte),
            (r#"{"a":1]"#, 6, UnexpectedByte),
            ("nul", 3, UnexpectedEnd),
            ("nulx", 0, UnexpectedByte),
            ("True", 0, UnexpectedByte),
            ("NaN", 0, UnexpectedByte),
            ("'a'", 0, UnexpectedByte),
            ("+1", 0, UnexpectedByte),
            ("01", 1, TrailingData),
            ("1.", 2, BadNumber),
            (".5", 0, UnexpectedByte),
            ("-", 1, BadNumber),
            ("1e", 2, BadNumber),
            ("1e+", 3, BadNumber),
            (r#""\x""#, 2, BadEscape),
            (r#""\u12G4""#, 5, BadEscape),
            (r#""\u12"#, 5, UnexpectedEnd),
            ("\"a\nb\"", 2, ControlInString),
            ("\"\0\"", 1, ControlInString),
            ("1 2", 2, TrailingData),
            ("{} x", 3, TrailingData),
            ("[]]", 2, TrailingData),
            ("// c\n1", 0, UnexpectedByte),
            ("\u{FEFF}1", 0, UnexpectedByte),
            ("[1,\u{A0}2]", 3, UnexpectedByte),
        ] {
            assert_eq!(validate(text), Err(JsonError { at, reason }), "{text:?}");
        }
    }

    fn nested(depth: usize, open: &str, close: &str) -> String {
        let mut s = String::new();
        for _ in 0..depth {
            s.push_str(open);
        }
        s.push('1');
        for _ in 0..depth {
            s.push_str(close);
        }
        s
    }

    #[test]
    fn depth_is_bounded() {
        for (open, close) in [("[", "]"), ("{\"k\":", "}"), ("[{\"k\":", "}]")] {
            let levels = if open.len() > 5 { 2 } else { 1 };
            let ok = nested(MAX_DEPTH / levels, open, close);
            assert_eq!(validate(&ok), Ok(()), "{open}");
            let deep = nested(MAX_DEPTH / levels + 1, open, close);
            assert_eq!(
                validate(&deep).map_err(|e| e.reason),
                Err(JsonReason::TooDeep),
                "{open}"
            );
        }
        // Far beyond any limit, it fails fast without recursion.
        let hostile = "[".repeat(1_000_000);
        assert_eq!(
            validate(&hostile),
            Err(JsonError {
                at: MAX_DEPTH,
                reason: JsonReason::TooDeep
            })
        );
        // Siblings do not add up to depth.
        let wide = String::from("[") + &"[],".repeat(10_000) + "[]]";
        assert_eq!(validate(&wide), Ok(()));
    }

    #[test]
    fn depth_limit_is_configurable_up_to_the_bit_stack() {
        assert_eq!(validate_with_depth("1", 0), Ok(()));
        assert!(validate_with_depth("[]", 0).is_err());
        let s = nested(DEPTH_LIMIT, "[", "]");
        assert_eq!(validate_with_depth(&s, usize::MAX), Ok(()));
        let s = nested(DEPTH_LIMIT + 1, "[", "]");
        assert!(validate_with_depth(&s, usize::MAX).is_err());
        // Objects and arrays alternate correctly at the deepest bits.
        let s = nested(DEPTH_LIMIT / 2, "[{\"k\":", "}]");
        assert_eq!(validate_with_depth(&s, DEPTH_LIMIT), Ok(()));
    }

    #[test]
    fn error_message_names_the_offset() {
        let e = validate("[1,]").unwrap_err();
        assert_eq!(
            alloc::format!("{e}"),
            "invalid JSON at byte 3: unexpected character"
        );
    }
}

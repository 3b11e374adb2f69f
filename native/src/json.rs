//! JSON scanning over one line, as msgspec's JSON decoder reads it.
//!
//! Every function either reads exactly what msgspec would accept at that point and returns
//! it, or returns `Unsure`: the line is then left to msgspec, which accepts or refuses it and
//! words the refusal. Being stricter than msgspec only costs speed; being looser would be a
//! bug, so where msgspec's rules are intricate (numbers of more than 19 digits, huge
//! exponents, escapes inside times) this side declines rather than follows them.
//!
//! All indexing is bounds-checked (`get`), so no input, however cut short, can read past the
//! line.

/// The line is not one this decoder is sure to read exactly as msgspec does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsure;

pub type Read<T> = Result<T, Unsure>;

/// How deep unknown fields may nest before the line is left to msgspec.
const MAX_DEPTH: usize = 64;

/// Bytes that end a fast scan of a string: `"`, `\` and the control characters msgspec
/// refuses inside strings.
const fn string_stops() -> [bool; 256] {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
}

static STOPS: [bool; 256] = string_stops();

/// A string as it stands between its quotes, escapes not yet applied.
#[derive(Debug, Clone, Copy)]
pub struct Text<'a> {
    pub raw: &'a [u8],
    pub escaped: bool,
    /// Every raw byte is below 0x80 (escapes may still stand for other characters).
    pub ascii: bool,
}

impl<'a> Text<'a> {
    /// True if the string, escapes applied, is valid UTF-8 (what a `str` field requires).
    ///
    /// Escapes are ASCII and stand for whole code points (surrogates were paired when the
    /// string was read), so the raw text is valid exactly when the unescaped one is.
    #[inline]
    pub fn is_utf8(&self) -> bool {
        self.ascii || std::str::from_utf8(self.raw).is_ok()
    }

    /// The string's bytes with escapes applied, borrowed when it has none.
    #[inline]
    pub fn unescaped<'s>(&self, scratch: &'s mut Vec<u8>) -> &'s [u8]
    where
        'a: 's,
    {
        if !self.escaped {
            return self.raw;
        }
        scratch.clear();
        unescape_into(self.raw, scratch);
        scratch
    }
}

/// A number as JSON spells it, checked against JSON's grammar (msgspec's).
#[derive(Debug, Clone, Copy)]
pub struct Number<'a> {
    pub text: &'a [u8],
    pub negative: bool,
    /// No fraction and no exponent: msgspec reads it as an integer first.
    pub integer: bool,
    /// Digits of the integer and fraction parts, leading zeros left out.
    pub significant: usize,
    /// The value of those digits (only meaningful up to 19 of them).
    pub mantissa: u64,
    /// Power of ten the mantissa is scaled by (fraction digits and exponent).
    pub exponent: i64,
}

const POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

impl Number<'_> {
    /// The value a `float` field gets, correctly rounded as msgspec rounds it, or `Unsure`.
    ///
    /// msgspec reads an integer as an integer and converts it (so `-0` is `0.0`, not
    /// `-0.0`); anything else it rounds correctly (a fast exact path, Eisel-Lemire, or a
    /// slow exact fallback). Correct rounding has one answer, which Rust's parser also
    /// gives. Numbers of more than 19 digits, or exponents beyond 300, are left to msgspec.
    pub fn as_f64(&self) -> Read<f64> {
        if self.significant > 19 {
            return Err(Unsure);
        }
        if self.integer {
            // An integer converted to float: zero is `0.0` whatever its sign.
            let magnitude = self.mantissa as f64;
            return Ok(if self.negative && self.mantissa != 0 { -magnitude } else { magnitude });
        }
        if self.exponent.abs() > 300 {
            return Err(Unsure);
        }
        let value = if self.mantissa >> 53 == 0 && self.exponent.abs() <= 22 {
            let exact = self.mantissa as f64;
            let scaled = if self.exponent >= 0 {
                exact * POWERS_OF_TEN[self.exponent as usize]
            } else {
                exact / POWERS_OF_TEN[(-self.exponent) as usize]
            };
            if self.negative {
                -scaled
            } else {
                scaled
            }
        } else {
            let text = std::str::from_utf8(self.text).map_err(|_| Unsure)?;
            text.parse::<f64>().map_err(|_| Unsure)?
        };
        if value.is_finite() {
            Ok(value)
        } else {
            Err(Unsure)
        }
    }

    /// The value an `int` field gets: an integer of at most 18 digits, else `Unsure`
    /// (msgspec refuses a fraction or an exponent in strict mode; larger integers it reads
    /// as Python ints, which this side leaves to it).
    pub fn as_i64(&self) -> Read<Option<i64>> {
        if !self.integer {
            return Ok(None);
        }
        if self.significant > 18 {
            return Err(Unsure);
        }
        let magnitude = self.mantissa as i64;
        Ok(Some(if self.negative { -magnitude } else { magnitude }))
    }
}

/// True if `a` and `b` hold the same bytes; compared eight at a time in registers (the
/// strings compared here are short: keys, literals, ids).
#[inline]
pub fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut left = a.chunks_exact(8);
    let mut right = b.chunks_exact(8);
    let words = |chunk: &[u8]| chunk.try_into().map(u64::from_le_bytes).unwrap_or(0);
    left.by_ref().zip(right.by_ref()).all(|(x, y)| words(x) == words(y))
        && left.remainder().iter().zip(right.remainder()).all(|(x, y)| x == y)
}

/// A position in a block of lines. A line's newline ends what is read on it: the JSON
/// whitespace skipped is the space, tab and carriage return, and a newline where a token or
/// a value's continuation is expected makes the line `Unsure` (a record split over lines).
pub struct Cursor<'a> {
    line: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    #[cfg(test)]
    pub fn new(line: &'a [u8]) -> Self {
        Cursor { line, at: 0 }
    }

    /// A cursor at `at` in `data`.
    pub fn at(data: &'a [u8], at: usize) -> Self {
        Cursor { line: data, at }
    }

    /// If the next token is the string `name` written plainly (quotes, no escapes), consume
    /// it and return true; otherwise move nothing (the caller reads the key in full).
    #[inline]
    pub fn take_key(&mut self, name: &[u8]) -> bool {
        if self.next_token() != Some(b'"') {
            return false;
        }
        let start = self.at + 1;
        let end = start + name.len();
        let plain = self.line.get(start..end).is_some_and(|text| same_bytes(text, name))
            && self.line.get(end) == Some(&b'"');
        if plain {
            self.at = end + 1;
        }
        plain
    }

    /// Where the cursor is.
    pub fn position(&self) -> usize {
        self.at
    }

    pub fn peek(&self) -> Option<u8> {
        self.line.get(self.at).copied()
    }

    /// Skip whitespace within the line and return the next byte, if any (a newline is
    /// returned, not skipped).
    #[inline]
    pub fn next_token(&mut self) -> Option<u8> {
        while let Some(&byte) = self.line.get(self.at) {
            if byte > b' ' {
                return Some(byte); // the usual case: no whitespace at all
            }
            if byte == b' ' || byte == b'\t' || byte == b'\r' {
                self.at += 1;
            } else {
                return Some(byte);
            }
        }
        None
    }

    /// After a record: skip the rest of its line's whitespace and its newline. True if the
    /// line ended there (at a newline or the end of the data), false if anything else is
    /// left on it.
    pub fn end_line(&mut self) -> bool {
        match self.next_token() {
            None => true,
            Some(b'\n') => {
                self.at += 1;
                true
            }
            Some(_) => false,
        }
    }

    /// Skip whitespace, then consume `expected` or fail.
    pub fn expect(&mut self, expected: u8) -> Read<()> {
        if self.next_token() == Some(expected) {
            self.at += 1;
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    /// True once nothing but whitespace is left (test helper).
    #[cfg(test)]
    pub fn at_end(&mut self) -> bool {
        self.next_token().is_none()
    }

    fn bump(&mut self) {
        self.at += 1;
    }

    /// Consume `word` exactly (after its first byte was peeked).
    fn literal(&mut self, word: &[u8]) -> Read<()> {
        let end = self.at.checked_add(word.len()).ok_or(Unsure)?;
        if self.line.get(self.at..end) == Some(word) {
            self.at = end;
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    /// `null` if it comes next (after whitespace): consumed, and true.
    pub fn null(&mut self) -> Read<bool> {
        if self.next_token() == Some(b'n') {
            self.literal(b"null")?;
            return Ok(true);
        }
        Ok(false)
    }

    pub fn boolean(&mut self) -> Read<bool> {
        match self.next_token() {
            Some(b't') => self.literal(b"true").map(|_| true),
            Some(b'f') => self.literal(b"false").map(|_| false),
            _ => Err(Unsure),
        }
    }

    /// A string: its raw text between the quotes, checked as msgspec checks it (no control
    /// characters, known escapes only, `\u` escapes of four hex digits whose surrogates
    /// pair up). UTF-8 is not checked here: msgspec checks it only where it makes a `str`.
    pub fn string(&mut self) -> Read<Text<'a>> {
        if self.next_token() != Some(b'"') {
            return Err(Unsure);
        }
        self.bump();
        let start = self.at;
        let mut escaped = false;
        let mut ascii = true;
        loop {
            let (stop, high) = scan_plain(self.line, self.at);
            self.at = stop;
            ascii &= !high;
            match self.line.get(self.at) {
                Some(b'"') => {
                    let raw = &self.line[start..self.at];
                    self.bump();
                    return Ok(Text { raw, escaped, ascii });
                }
                Some(b'\\') => {
                    escaped = true;
                    self.bump();
                    self.escape()?;
                }
                _ => return Err(Unsure), // a control character, or the line ended
            }
        }
    }

    /// After a backslash: one escape, as msgspec reads it.
    fn escape(&mut self) -> Read<()> {
        let byte = self.peek().ok_or(Unsure)?;
        self.bump();
        match byte {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(()),
            b'u' => {
                let unit = self.hex4()?;
                if (0xDC00..=0xDFFF).contains(&unit) {
                    return Err(Unsure); // a low surrogate alone
                }
                if (0xD800..=0xDBFF).contains(&unit) {
                    self.literal(b"\\u")?;
                    let low = self.hex4()?;
                    if !(0xDC00..=0xDFFF).contains(&low) {
                        return Err(Unsure);
                    }
                }
                Ok(())
            }
            _ => Err(Unsure),
        }
    }

    fn hex4(&mut self) -> Read<u32> {
        let end = self.at.checked_add(4).ok_or(Unsure)?;
        let digits = self.line.get(self.at..end).ok_or(Unsure)?;
        let mut unit = 0u32;
        for &digit in digits {
            unit = unit * 16 + (digit as char).to_digit(16).ok_or(Unsure)?;
        }
        self.at = end;
        Ok(unit)
    }

    /// A number, checked against JSON's grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    pub fn number(&mut self) -> Read<Number<'a>> {
        self.next_token();
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.bump();
        }
        let mut mantissa = 0u64;
        let mut significant = 0usize;
        let take = |digit: u8, mantissa: &mut u64, significant: &mut usize| {
            if *significant > 0 || digit != b'0' {
                *significant += 1;
                if *significant <= 19 {
                    *mantissa = *mantissa * 10 + u64::from(digit - b'0');
                }
            }
        };
        match self.peek() {
            Some(b'0') => {
                self.bump();
                if matches!(self.peek(), Some(b'0'..=b'9')) {
                    return Err(Unsure);
                }
            }
            Some(b'1'..=b'9') => {
                while let Some(digit @ b'0'..=b'9') = self.peek() {
                    take(digit, &mut mantissa, &mut significant);
                    self.bump();
                }
            }
            _ => return Err(Unsure),
        }
        let mut exponent: i64 = 0;
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.bump();
            let fraction = self.at;
            while let Some(digit @ b'0'..=b'9') = self.peek() {
                take(digit, &mut mantissa, &mut significant);
                exponent -= 1;
                self.bump();
            }
            if self.at == fraction {
                return Err(Unsure);
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            integer = false;
            self.bump();
            let sign: i64 = match self.peek() {
                Some(b'-') => {
                    self.bump();
                    -1
                }
                Some(b'+') => {
                    self.bump();
                    1
                }
                _ => 1,
            };
            let digits = self.at;
            let mut power: i64 = 0;
            while let Some(digit @ b'0'..=b'9') = self.peek() {
                power = (power * 10 + i64::from(digit - b'0')).min(1_000_000);
                self.bump();
            }
            if self.at == digits {
                return Err(Unsure);
            }
            exponent += sign * power;
        }
        Ok(Number {
            text: &self.line[start..self.at],
            negative,
            integer,
            significant,
            mantissa,
            exponent,
        })
    }

    /// Skip one value of any kind, checked as msgspec checks what it skips.
    pub fn skip(&mut self) -> Read<()> {
        self.skip_nested(0)
    }

    fn skip_nested(&mut self, depth: usize) -> Read<()> {
        if depth > MAX_DEPTH {
            return Err(Unsure);
        }
        match self.next_token().ok_or(Unsure)? {
            b'n' => self.literal(b"null"),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'"' => self.string().map(|_| ()),
            b'[' => {
                self.bump();
                if self.next_token() == Some(b']') {
                    self.bump();
                    return Ok(());
                }
                loop {
                    self.skip_nested(depth + 1)?;
                    match self.next_token() {
                        Some(b',') => self.bump(),
                        Some(b']') => {
                            self.bump();
                            return Ok(());
                        }
                        _ => return Err(Unsure),
                    }
                }
            }
            b'{' => {
                self.bump();
                if self.next_token() == Some(b'}') {
                    self.bump();
                    return Ok(());
                }
                loop {
                    self.string()?;
                    self.expect(b':')?;
                    self.skip_nested(depth + 1)?;
                    match self.next_token() {
                        Some(b',') => self.bump(),
                        Some(b'}') => {
                            self.bump();
                            return Ok(());
                        }
                        _ => return Err(Unsure),
                    }
                }
            }
            _ => self.number().map(|_| ()),
        }
    }

    /// After a member's value: true if another member follows (`,`), false at `}`.
    pub fn more_members(&mut self) -> Read<bool> {
        match self.next_token() {
            Some(b',') => {
                self.bump();
                Ok(true)
            }
            Some(b'}') => {
                self.bump();
                Ok(false)
            }
            _ => Err(Unsure),
        }
    }

    /// At an object's start: consume `{`; true if it has a first member, false if `{}`.
    pub fn open_object(&mut self) -> Read<bool> {
        self.expect(b'{')?;
        if self.next_token() == Some(b'}') {
            self.bump();
            return Ok(false);
        }
        Ok(true)
    }
}

/// Index of the first byte at or after `at` that is a quote, a backslash or a control
/// character (or the line's length), and whether a byte of 0x80 or more came before it:
/// eight bytes at a time where it can.
#[inline]
fn scan_plain(line: &[u8], mut at: usize) -> (usize, bool) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut high = 0u64;
    while let Some(Ok(word)) = line.get(at..at + 8).map(<[u8; 8]>::try_from) {
        let value = u64::from_le_bytes(word);
        // A byte is flagged when it is below 0x20, or equal to '"' or '\\'. Bytes of 0x80
        // and above are never flagged, and a borrow only flags bytes above a flagged one,
        // so the lowest flagged byte is the first stop.
        let low = value.wrapping_sub(ONES * 0x20) & !value;
        let quote = value ^ (ONES * u64::from(b'"'));
        let quote = quote.wrapping_sub(ONES) & !quote;
        let slash = value ^ (ONES * u64::from(b'\\'));
        let slash = slash.wrapping_sub(ONES) & !slash;
        let stops = (low | quote | slash) & HIGHS;
        if stops != 0 {
            let before = (stops.trailing_zeros() / 8) as usize;
            // Only the bytes before the stop count for `high`.
            let kept = if before == 0 { 0 } else { u64::MAX >> (64 - 8 * before) };
            return (at + before, (high | (value & kept)) & HIGHS != 0);
        }
        high |= value;
        at += 8;
    }
    let mut seen_high = high & HIGHS != 0;
    while let Some(&byte) = line.get(at) {
        if STOPS[byte as usize] {
            break;
        }
        seen_high |= byte >= 0x80;
        at += 1;
    }
    (at, seen_high)
}

/// Apply the escapes of a string already checked by `Cursor::string`.
fn unescape_into(raw: &[u8], out: &mut Vec<u8>) {
    let mut at = 0;
    while at < raw.len() {
        let byte = raw[at];
        if byte != b'\\' {
            out.push(byte);
            at += 1;
            continue;
        }
        let kind = raw.get(at + 1).copied().unwrap_or(b'\\');
        at += 2;
        let simple = match kind {
            b'n' => b'\n',
            b't' => b'\t',
            b'r' => b'\r',
            b'b' => 0x08,
            b'f' => 0x0C,
            b'u' => {
                let mut code = hex_at(raw, at);
                at += 4;
                if (0xD800..=0xDBFF).contains(&code) {
                    let low = hex_at(raw, at + 2);
                    at += 6;
                    code = 0x10000 + ((code - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF);
                }
                let mut buffer = [0u8; 4];
                let text = char::from_u32(code).unwrap_or('\u{FFFD}').encode_utf8(&mut buffer);
                out.extend_from_slice(text.as_bytes());
                continue;
            }
            other => other, // '"', '\\' and '/' stand for themselves
        };
        out.push(simple);
    }
}

fn hex_at(raw: &[u8], at: usize) -> u32 {
    raw.get(at..at + 4)
        .map(|digits| {
            digits
                .iter()
                .fold(0u32, |unit, &digit| unit * 16 + (digit as char).to_digit(16).unwrap_or(0))
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(source: &str) -> Read<(Vec<u8>, bool)> {
        let mut cursor = Cursor::new(source.as_bytes());
        let found = cursor.string()?;
        let mut scratch = Vec::new();
        Ok((found.unescaped(&mut scratch).to_vec(), found.is_utf8()))
    }

    #[test]
    fn strings_unescape_as_json_says() {
        assert_eq!(text(r#""a\"b\\c\/d\n\t\r\b\f""#).unwrap().0, b"a\"b\\c/d\n\t\r\x08\x0C");
        assert_eq!(text(r#""\u00e9\ud83d\ude00""#).unwrap().0, "é😀".as_bytes());
        assert_eq!(text(r#""\u0000""#).unwrap().0, b"\0");
    }

    #[test]
    fn strings_msgspec_refuses_are_refused() {
        for bad in [r#""\ud83d""#, r#""\ude00""#, r#""\ud83dx""#, r#""\ud83d\u0041""#,
                    r#""\x""#, r#""\u12""#, "\"a\u{1}b\"", "\"open", r#""\"#] {
            assert_eq!(text(bad), Err(Unsure), "{bad}");
        }
    }

    #[test]
    fn invalid_utf8_is_seen_where_a_str_is_made() {
        for text in [&b"\"a\xff\""[..], b"\"abcdefghijklmno\xffpq\"", b"\"\\n\xc3\""] {
            let found = Cursor::new(text).string().unwrap();
            assert!(!found.ascii && !found.is_utf8());
        }
        let found = Cursor::new("\"caf\u{e9} and more than eight\"".as_bytes()).string().unwrap();
        assert!(!found.ascii && found.is_utf8());
    }

    #[test]
    fn scanning_stops_at_every_special_byte_in_any_position() {
        for position in 0..20 {
            for special in [b'"', b'\\', 0x00, 0x1F, b'\n'] {
                let mut line = vec![b'a'; 24];
                line[position] = special;
                assert_eq!(scan_plain(&line, 0), (position, false));
                line[position + 1] = b'"'; // a second stop after the first changes nothing
                assert_eq!(scan_plain(&line, 0), (position, false));
            }
            let mut line = vec![0xC3u8; 24];
            line[position] = b'"';
            assert_eq!(scan_plain(&line, 0), (position, position > 0));
            let mut line = vec![b'a'; 24];
            line[position] = b'"';
            line[position + 2] = 0xFF; // a high byte after the stop is not counted
            assert_eq!(scan_plain(&line, 0), (position, false));
        }
    }

    fn float(source: &str) -> Read<f64> {
        Cursor::new(source.as_bytes()).number()?.as_f64()
    }

    #[test]
    fn numbers_follow_json_grammar() {
        for bad in ["01", "-", "1.", ".5", "+1", "1e", "1e+", "-x", "1.e5"] {
            let read = Cursor::new(bad.as_bytes()).number();
            let whole = read.map(|number| number.text.len() == bad.len());
            assert!(read.is_err() || whole == Ok(false), "{bad}");
        }
        assert_eq!(float("-0").unwrap().to_bits(), 0.0f64.to_bits());
        assert_eq!(float("-0.0").unwrap().to_bits(), (-0.0f64).to_bits());
        assert_eq!(float("0.1").unwrap(), 0.1);
        assert_eq!(float("12345.678901234567").unwrap(), 12345.678901234567);
        assert_eq!(float("1e22").unwrap(), 1e22);
        assert_eq!(float("9007199254740993").unwrap(), 9007199254740992.0);
        assert_eq!(float("1e-300").unwrap(), 1e-300);
        assert_eq!(float("1e400"), Err(Unsure));
        assert_eq!(float("12345678901234567890"), Err(Unsure));
        assert_eq!(float("0.000000000000000000001"), Ok(1e-21));
    }

    #[test]
    fn skipping_checks_what_it_skips() {
        for good in [r#"{"a":[1,{"b":null}],"c":"\u00e9"}"#, "[]", "{}", "-1.5e-3", "true"] {
            let mut cursor = Cursor::new(good.as_bytes());
            assert_eq!(cursor.skip(), Ok(()), "{good}");
            assert!(cursor.at_end(), "{good}");
        }
        for bad in ["[1,]", "{\"a\"}", "{\"a\":1,}", "[1 2]", "nul", "tru", "{1:2}", "[", "\"\\q\""] {
            let mut cursor = Cursor::new(bad.as_bytes());
            let skipped = cursor.skip();
            assert!(skipped.is_err() || !cursor.at_end(), "{bad}");
        }
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert_eq!(Cursor::new(deep.as_bytes()).skip(), Err(Unsure));
    }
}

//! Lines of markets and signals to columns, one line at a time, in safe Rust.
//!
//! A line must hold exactly one JSON object (whitespace around it allowed) whose fields are
//! read by the schema's tables; anything else makes the whole block `Unsure` and pomabotd
//! decodes it with msgspec instead. Fields may come in any order; a repeated field is read
//! each time and the last one counts, as msgspec does; unknown fields are skipped (checked as
//! msgspec checks what it skips).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::json::{same_bytes, Cursor, Read, Text, Unsure};
use crate::schema::{self, Field, Kind};
use crate::time::utc_micros;

/// A field's value as read from one line.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Null,
    Text(Text<'a>),
    Float(f64),
    Int(i64),
    Bool(bool),
    Micros(i64),
    Code(u8),
}

/// Read one field's value by its kind, or `Unsure` where msgspec might refuse or differ.
#[inline(always)]
fn read_value<'a>(cursor: &mut Cursor<'a>, field: &Field) -> Read<Value<'a>> {
    if field.nullable && cursor.null()? {
        return Ok(Value::Null);
    }
    match field.kind {
        Kind::Str { min_length } => {
            let text = cursor.string()?;
            if !text.is_utf8() || (min_length > 0 && text.raw.is_empty()) {
                return Err(Unsure);
            }
            Ok(Value::Text(text))
        }
        Kind::Float { ge, le } => {
            let value = cursor.number()?.as_f64()?;
            // The values read are finite (never NaN), so `<` is the negation of `>=`.
            if ge.is_some_and(|bound| value < bound) || le.is_some_and(|bound| value > bound) {
                return Err(Unsure);
            }
            Ok(Value::Float(value))
        }
        Kind::Int { ge, le } => {
            let value = cursor.number()?.as_i64()?.ok_or(Unsure)?;
            if ge.is_some_and(|bound| value < bound) || le.is_some_and(|bound| value > bound) {
                return Err(Unsure);
            }
            Ok(Value::Int(value))
        }
        Kind::Bool => Ok(Value::Bool(cursor.boolean()?)),
        Kind::AwareTime => Ok(Value::Micros(utc_micros(&cursor.string()?)?)),
        Kind::Literal { codes, .. } => {
            let text = cursor.string()?;
            let mut scratch = Vec::new();
            let word = text.unescaped(&mut scratch);
            let code = codes.iter().position(|value| same_bytes(value.as_bytes(), word));
            let code = code.ok_or(Unsure)?;
            Ok(Value::Code(code as u8))
        }
    }
}

/// The object at the cursor read against `fields`: the value of each field present, `None`
/// for an absent one; the cursor is left past its line. `Unsure` unless the line holds
/// exactly one such object and nothing else.
fn read_object<'a, const N: usize>(
    cursor: &mut Cursor<'a>,
    fields: &[Field; N],
    scratch: &mut Vec<u8>,
) -> Read<[Option<Value<'a>>; N]> {
    let mut values: [Option<Value<'a>>; N] = [None; N];
    let mut expected = 0; // fields usually come in declaration order: try the next one first
    if cursor.open_object()? {
        loop {
            let found = match fields.get(expected) {
                Some(field) if cursor.take_key(field.name.as_bytes()) => Some(expected),
                _ => {
                    let key = cursor.string()?;
                    let name = key.unescaped(scratch);
                    fields.iter().position(|field| same_bytes(field.name.as_bytes(), name))
                }
            };
            cursor.expect(b':')?;
            match found {
                Some(index) => {
                    values[index] = Some(read_value(cursor, &fields[index])?);
                    expected = index + 1;
                }
                None => cursor.skip()?,
            }
            if !cursor.more_members()? {
                break;
            }
        }
    }
    if !cursor.end_line() {
        return Err(Unsure); // a second value on the line, or stray characters
    }
    for (field, value) in fields.iter().zip(values.iter()) {
        if field.default.is_none() && value.is_none() {
            return Err(Unsure); // a required field is missing
        }
    }
    Ok(values)
}

/// The code of a market's category after `Market.__post_init__`: ASCII text stripped of
/// Python's ASCII whitespace and lower-cased, one of `CATEGORIES` or else `other`. Text
/// with other characters is left to msgspec (Unicode whitespace and case rules).
fn category_code(text: &[u8]) -> Read<u8> {
    if !text.is_ascii() {
        return Err(Unsure);
    }
    // str.isspace() for ASCII: \t \n \v \f \r, the separators 0x1c-0x1f, and the space.
    let is_space = |byte: &u8| matches!(byte, 0x09..=0x0D | 0x1C..=0x20);
    let start = text.iter().position(|b| !is_space(b)).unwrap_or(text.len());
    let end = text.iter().rposition(|b| !is_space(b)).map_or(start, |at| at + 1);
    let word = &text[start..end];
    let other = schema::CATEGORIES.len() - 1;
    let code = schema::CATEGORIES
        .iter()
        .position(|name| name.len() == word.len() && name.as_bytes().eq_ignore_ascii_case(word))
        .unwrap_or(other);
    Ok(code as u8)
}

/// 64-bit FNV-1a, as `pomabotd.engine.pieces.id_hashes` computes it.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xCBF2_9CE4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
    }
    hash
}

/// A hasher for keys that already are hashes (the ids' FNV-1a): it passes them through.
#[derive(Default)]
pub struct Passthrough(u64);

impl Hasher for Passthrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv1a(bytes);
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// Market rows by the FNV-1a hash of their id.
pub type IdTable = HashMap<u64, u32, BuildHasherDefault<Passthrough>>;

/// One market line's columns.
pub struct MarketRow {
    pub price: f64,
    pub liquidity: f64,
    pub unknowns: f64,
    pub closes_at: i64,
    pub resolved: bool,
    pub authority_is_clear: bool,
    pub outcome_is_objective: bool,
    pub category: u8,
}

/// Read the market line at the cursor (leaving it at the next line): its columns, and its
/// id with escapes applied (into `id`).
pub fn market(cursor: &mut Cursor, id: &mut Vec<u8>, scratch: &mut Vec<u8>) -> Read<MarketRow> {
    let values = read_object(cursor, &schema::MARKET, scratch)?;
    let flag = |index: usize| match values[index] {
        Some(Value::Bool(value)) => value,
        _ => schema::MARKET[index].default == Some("True"),
    };
    let float = |index: usize| match values[index] {
        Some(Value::Float(value)) => value,
        _ => f64::NAN, // required, so always present: read_object checked
    };
    let Some(Value::Text(raw_id)) = values[schema::M_ID] else { return Err(Unsure) };
    id.clear();
    id.extend_from_slice(raw_id.unescaped(scratch));
    let category = match values[schema::M_CATEGORY] {
        Some(Value::Text(text)) => category_code(text.unescaped(scratch))?,
        _ => (schema::CATEGORIES.len() - 1) as u8, // the default, `other`
    };
    Ok(MarketRow {
        price: float(schema::M_PRICE),
        liquidity: float(schema::M_LIQUIDITY),
        unknowns: match values[schema::M_UNKNOWNS] {
            Some(Value::Int(count)) => count as f64,
            _ => 0.0,
        },
        closes_at: match values[schema::M_CLOSES_AT] {
            Some(Value::Micros(micros)) => micros,
            _ => i64::MAX,
        },
        resolved: matches!(values[schema::M_OUTCOME], Some(Value::Code(_))),
        authority_is_clear: flag(schema::M_AUTHORITY),
        outcome_is_objective: flag(schema::M_OBJECTIVE),
        category,
    })
}

/// One signal line's columns (`market` is filled in by the caller).
pub struct SignalRow {
    pub timestamp: i64,
    pub kind: u8,
    pub direction: u8,
    pub strength: f64,
    pub conflicts: bool,
}

/// Read the signal line at the cursor (leaving it at the next line): its columns, and its
/// market id with escapes applied (into `id`).
pub fn signal(cursor: &mut Cursor, id: &mut Vec<u8>, scratch: &mut Vec<u8>) -> Read<SignalRow> {
    let values = read_object(cursor, &schema::SIGNAL, scratch)?;
    let code = |index: usize| match values[index] {
        Some(Value::Code(code)) => Ok(code),
        _ => Err(Unsure),
    };
    let Some(Value::Text(raw_id)) = values[schema::S_MARKET_ID] else { return Err(Unsure) };
    id.clear();
    id.extend_from_slice(raw_id.unescaped(scratch));
    Ok(SignalRow {
        timestamp: match values[schema::S_TIMESTAMP] {
            Some(Value::Micros(micros)) => micros,
            _ => return Err(Unsure),
        },
        kind: code(schema::S_TYPE)?,
        direction: code(schema::S_DIRECTION)?,
        strength: match values[schema::S_STRENGTH] {
            Some(Value::Int(strength)) => strength as f64,
            _ => return Err(Unsure),
        },
        conflicts: matches!(values[schema::S_CONFLICTS], Some(Value::Bool(true))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(line: &str) -> Read<(MarketRow, Vec<u8>)> {
        let (mut id, mut scratch) = (Vec::new(), Vec::new());
        market(&mut Cursor::new(line.as_bytes()), &mut id, &mut scratch).map(|row| (row, id))
    }

    const PLAIN: &str = r#"{"id":"m1","question":"q","price":50,"liquidity":1000.5}"#;

    #[test]
    fn a_plain_market_takes_the_defaults() {
        let (row, id) = read(PLAIN).unwrap();
        assert_eq!(id, b"m1");
        assert_eq!((row.price, row.liquidity, row.unknowns), (50.0, 1000.5, 0.0));
        assert_eq!(row.closes_at, i64::MAX);
        assert!(!row.resolved && row.authority_is_clear && row.outcome_is_objective);
        assert_eq!(row.category, 8);
    }

    #[test]
    fn categories_are_normalised_like_post_init() {
        for (category, code) in [("Politics", 0), (" CRYPTO\t", 1), ("\u{000b}world\u{001f}", 7),
                                 ("US politics", 8), ("", 8), ("other", 8)] {
            let line = PLAIN.replace("}", &format!(r#","category":{}}}"#,
                                                   serde_like_quote(category)));
            assert_eq!(read(&line).unwrap().0.category, code, "{category:?}");
        }
        let line = PLAIN.replace("}", r#","category":"\u00a0politics"}"#);
        assert!(read(&line).is_err());
    }

    fn serde_like_quote(text: &str) -> String {
        let mut out = String::from("\"");
        for ch in text.chars() {
            if (ch as u32) < 0x20 {
                out.push_str(&format!("\\u{:04x}", ch as u32));
            } else {
                out.push(ch);
            }
        }
        out.push('"');
        out
    }

    #[test]
    fn lines_msgspec_refuses_are_unsure() {
        for bad in [
            r#"{"id":"","question":"q","price":50,"liquidity":1}"#,
            r#"{"id":"m","question":"q","price":100.5,"liquidity":1}"#,
            r#"{"id":"m","question":"q","price":-1,"liquidity":1}"#,
            r#"{"id":"m","question":"q","price":"50","liquidity":1}"#,
            r#"{"id":"m","question":"q","liquidity":1}"#,
            r#"{"id":"m","question":null,"price":50,"liquidity":1}"#,
            r#"{"id":"m","question":"q","price":50,"liquidity":1,"unknowns":1.0}"#,
            r#"{"id":"m","question":"q","price":50,"liquidity":1,"outcome":"yes"}"#,
            r#"{"id":"m","question":"q","price":50,"liquidity":1,"closes_at":"2020-01-01T00:00:00"}"#,
            r#"{"id":"m","question":"q","price":50,"liquidity":1,}"#,
            r#"{"id":"m","question":"q","price":50,"liquidity":1}{}"#,
            r#"{"id":"m","question":"q","price":50,"liquidity":1,"x":[1,]}"#,
            r#"[{"id":"m","question":"q","price":50,"liquidity":1}]"#,
            r#"{"id":"m","question":"q","price":50,"liquidity":1,"price":101}"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
        let invalid = b"{\"id\":\"m\",\"question\":\"\xff\",\"price\":50,\"liquidity\":1}";
        assert!(market(&mut Cursor::new(invalid), &mut Vec::new(), &mut Vec::new()).is_err());
    }

    #[test]
    fn a_repeated_field_counts_its_last_value_and_unknown_ones_are_skipped() {
        let line = r#" { "price" : 20 , "id":"m\u0031", "question":"q", "x":{"y":[null,true]},
                       "price":30, "liquidity":0, "unknowns":-0 , "outcome":"NO"} "#
            .replace('\n', "\t");
        let (row, id) = read(&line).unwrap();
        assert_eq!((row.price, id.as_slice(), row.unknowns, row.resolved), (30.0, &b"m1"[..], 0.0, true));
        let skipped_invalid_utf8 = b"{\"id\":\"m\",\"question\":\"q\",\"price\":50,\"liquidity\":1,\"x\":\"\xff\"}";
        assert!(market(&mut Cursor::new(skipped_invalid_utf8), &mut Vec::new(), &mut Vec::new()).is_ok());
    }

    #[test]
    fn signals_read_codes_and_times() {
        let line = br#"{"market_id":"m1","type":"speculative","direction":"neutral","strength":5,"timestamp":"1970-01-02T00:00:00Z","conflicts_with_existing":true}"#;
        let mut id = Vec::new();
        let row = signal(&mut Cursor::new(line), &mut id, &mut Vec::new()).unwrap();
        assert_eq!((row.kind, row.direction, row.strength, row.conflicts), (4, 2, 5.0, true));
        assert_eq!(row.timestamp, 86_400_000_000);
        let weak = br#"{"market_id":"m1","type":"speculative","direction":"up","strength":0,"timestamp":"1970-01-02T00:00:00Z"}"#;
        assert!(signal(&mut Cursor::new(weak), &mut id, &mut Vec::new()).is_err());
    }

    #[test]
    fn hashes_match_fnv1a() {
        assert_eq!(fnv1a(b"a"), 12638187200555641996);
    }
}

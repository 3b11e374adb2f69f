//! Aware RFC 3339 times as msgspec reads them, to exact microseconds since the epoch in UTC.
//!
//! msgspec's rules, followed here: `YYYY-MM-DD`, then `T`, `t` or a space, then `HH:MM:SS`;
//! an optional fraction of any number of digits, rounded half up to microseconds (the
//! seventh digit decides; a carry may roll over into the next day, month or year, and past
//! 9999 the time is refused); then `Z`, `z`, or an offset `+HH:MM`, `+HHMM` (hours up to 23,
//! minutes up to 59). Years 1-9999, real calendar days, hours up to 23, minutes and seconds
//! up to 59. A time without an offset is refused: the models' times must be aware. The
//! result is the UTC instant, which may fall outside years 1-9999 when the offset carries it
//! there (`9999-12-31T23:59:59-01:00`), as Python's datetime arithmetic allows.

use crate::json::{Read, Text, Unsure};

fn digits(text: &[u8], at: usize, count: usize) -> Read<i64> {
    let mut value = 0i64;
    for &byte in text.get(at..at + count).ok_or(Unsure)? {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return Err(Unsure);
        }
        value = value * 10 + i64::from(digit);
    }
    Ok(value)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Microseconds since 1970-01-01T00:00:00Z of an aware RFC 3339 time, or `Unsure`.
pub fn utc_micros(text: &Text) -> Read<i64> {
    if text.escaped {
        return Err(Unsure); // msgspec unescapes first; such times are left to it
    }
    let raw = text.raw;
    let Some(Ok(head)) = raw.get(..19).map(<&[u8; 19]>::try_from) else {
        return Err(Unsure);
    };
    if head[4] != b'-' || head[7] != b'-' || !matches!(head[10], b'T' | b't' | b' ')
        || head[13] != b':' || head[16] != b':'
    {
        return Err(Unsure);
    }
    let mut year = digits(head, 0, 4)?;
    let mut month = digits(head, 5, 2)?;
    let mut day = digits(head, 8, 2)?;
    let mut hour = digits(head, 11, 2)?;
    let mut minute = digits(head, 14, 2)?;
    let mut second = digits(head, 17, 2)?;
    let mut at = 19;
    let mut micro = 0i64;
    let mut round_up = false;
    if raw.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while at - start < 6 && raw.get(at).is_some_and(u8::is_ascii_digit) {
            micro = micro * 10 + i64::from(raw[at] - b'0');
            at += 1;
        }
        let taken = at - start;
        if taken == 0 {
            return Err(Unsure);
        }
        if taken == 6 && raw.get(at).is_some_and(u8::is_ascii_digit) {
            round_up = raw[at] >= b'5';
            while raw.get(at).is_some_and(u8::is_ascii_digit) {
                at += 1;
            }
        }
        micro *= 10i64.pow(6 - taken as u32);
    }
    let offset_minutes = match raw.get(at) {
        None => return Err(Unsure), // naive: the models want an aware time
        Some(b'Z' | b'z') => {
            if at + 1 != raw.len() {
                return Err(Unsure);
            }
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            at += 1;
            if raw.len() - at < 3 {
                return Err(Unsure);
            }
            let hours = digits(raw, at, 2)?;
            at += 2;
            if raw.get(at) == Some(&b':') {
                at += 1;
            }
            if raw.len() - at != 2 {
                return Err(Unsure);
            }
            let minutes = digits(raw, at, 2)?;
            if hours > 23 || minutes > 59 {
                return Err(Unsure);
            }
            let total = hours * 60 + minutes;
            if sign == b'-' {
                -total
            } else {
                total
            }
        }
        Some(_) => return Err(Unsure),
    };
    if year == 0 || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(Unsure);
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(Unsure);
    }
    if round_up {
        micro += 1;
        if micro == 1_000_000 {
            micro = 0;
            second += 1;
            if second == 60 {
                second = 0;
                minute += 1;
                if minute == 60 {
                    minute = 0;
                    hour += 1;
                    if hour == 24 {
                        hour = 0;
                        day += 1;
                        if day == days_in_month(year, month) + 1 {
                            day = 1;
                            month += 1;
                            if month > 12 {
                                month = 1;
                                year += 1;
                                if year > 9999 {
                                    return Err(Unsure);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_minutes * 60;
    Ok(seconds * 1_000_000 + micro)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(text: &str) -> Read<i64> {
        utc_micros(&Text { raw: text.as_bytes(), escaped: false, ascii: true })
    }

    #[test]
    fn spellings_msgspec_accepts() {
        assert_eq!(micros("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(micros("1970-01-01t00:00:00z"), Ok(0));
        assert_eq!(micros("1970-01-01 00:00:01+00:00"), Ok(1_000_000));
        assert_eq!(micros("1970-01-01T01:00:00+0100"), Ok(0));
        assert_eq!(micros("1970-01-01T00:00:00.5Z"), Ok(500_000));
        assert_eq!(micros("1970-01-01T00:00:00.0000005Z"), Ok(1));
        assert_eq!(micros("1970-01-01T00:00:00.00000049999Z"), Ok(0));
        assert_eq!(micros("1969-12-31T23:59:59.9999995Z"), Ok(0));
        assert_eq!(micros("2024-02-29T12:00:00Z"), Ok(1_709_208_000_000_000));
        assert_eq!(micros("9999-12-31T23:59:59-01:00"), Ok(253_402_304_399_000_000));
        assert_eq!(micros("0001-01-01T00:00:00+01:00"), Ok(-62_135_600_400_000_000));
    }

    #[test]
    fn spellings_msgspec_refuses() {
        for bad in [
            "1970-01-01T00:00:00", "1970-01-01T00:00:00.Z", "1970-01-01X00:00:00Z",
            "0000-01-01T00:00:00Z", "2023-02-29T00:00:00Z", "1970-13-01T00:00:00Z",
            "1970-01-01T24:00:00Z", "1970-01-01T00:60:00Z", "1970-01-01T00:00:60Z",
            "1970-01-01T00:00:00+24:00", "1970-01-01T00:00:00+00:60", "1970-01-01T00:00:00+0",
            "1970-01-01T00:00:00+00:0", "1970-01-01T00:00:00Zx", "9999-12-31T23:59:59.9999995Z",
            "1970-1-01T00:00:00Z", "+970-01-01T00:00:00Z", "1970-01-01T00:00:00 Z",
        ] {
            assert_eq!(micros(bad), Err(Unsure), "{bad}");
        }
    }
}

//! pomabotd's native decoder: a piece's market and signal lines (JSON, one object per line)
//! straight to the columns of pomabotd's columnar kernel, in one pass over the bytes.
//!
//! It validates what pomabotd's msgspec models validate and declines (`Unsure`) whatever it
//! is not certain to read exactly as msgspec does; pomabotd then decodes that block with
//! msgspec, which accepts or refuses it and words the refusal. It never accepts a line msgspec
//! refuses, and what it accepts yields columns equal to msgspec's path bit for bit (pomabotd's
//! differential tests hold it to both).
//!
//! Python calls it through ctypes (`pomabotd/engine/kernels/native.py`). The caller allocates
//! every output column (numpy arrays of `rows` elements) and passes pointers; nothing is
//! allocated here that outlives a call. Unsafe code is confined to this file's `extern "C"`
//! functions, which turn the caller's pointers into slices under the invariants documented at
//! each `unsafe` block; everything else is safe, bounds-checked Rust. No panic crosses the
//! boundary: each call runs under `catch_unwind` and reports a panic as an internal error.

mod json;
mod records;
mod schema;
mod time;

use std::ffi::{c_char, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use json::Cursor;
use records::{fnv1a, IdTable};

/// `Outcome.status`: every line was read.
pub const DECODED: i32 = 0;
/// `Outcome.status`: line `Outcome.line` (0-based) is not one this decoder is sure of.
pub const UNSURE: i32 = 1;
/// `Outcome.status`: line `Outcome.line` repeats a market id of an earlier line.
pub const REPEATED_ID: i32 = 2;
/// `Outcome.status`: the caller's columns were too small, or its arguments inconsistent.
pub const BAD_CALL: i32 = 3;
/// `Outcome.status`: the decoder panicked (a bug); the block is left to msgspec.
pub const PANICKED: i32 = 4;

/// What a call did. `count` is the number of records read: one per line, so the number of
/// lines when `status` is `DECODED` (a last line without its newline counts, an empty block
/// has none); `strangers` counts signals whose market is not among the given markets.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub status: i32,
    pub count: usize,
    pub line: usize,
    pub ids_used: usize,
    pub newline_in_id: u8,
    pub strangers: usize,
}

/// The caller's market columns, each `rows` elements long; `ids` holds `ids_capacity` bytes.
/// Booleans are bytes 0 or 1 (numpy's `bool_`); `category` indexes the schema's categories.
/// `ids` receives each id (escapes applied) followed by a newline, `id_end` the offset just
/// past each id; `line_start` and `line_end` where each record's line lies in the input.
#[repr(C)]
pub struct MarketColumns {
    pub rows: usize,
    pub price: *mut f64,
    pub liquidity: *mut f64,
    pub unknowns: *mut f64,
    pub closes_at: *mut i64,
    pub resolved: *mut u8,
    pub authority_is_clear: *mut u8,
    pub outcome_is_objective: *mut u8,
    pub category: *mut u8,
    pub line_start: *mut i64,
    pub line_end: *mut i64,
    pub id_hash: *mut u64,
    pub id_end: *mut i64,
    pub ids: *mut u8,
    pub ids_capacity: usize,
}

/// The caller's signal columns, each `rows` elements long. `market` receives the row of the
/// signal's market among the markets given, -1 when it is none of them.
#[repr(C)]
pub struct SignalColumns {
    pub rows: usize,
    pub market: *mut i64,
    pub timestamp: *mut i64,
    pub kind: *mut i8,
    pub direction: *mut i8,
    pub strength: *mut f64,
    pub conflicts: *mut u8,
}

/// Safe views of `MarketColumns`.
struct MarketSlices<'a> {
    price: &'a mut [f64],
    liquidity: &'a mut [f64],
    unknowns: &'a mut [f64],
    closes_at: &'a mut [i64],
    resolved: &'a mut [u8],
    authority_is_clear: &'a mut [u8],
    outcome_is_objective: &'a mut [u8],
    category: &'a mut [u8],
    line_start: &'a mut [i64],
    line_end: &'a mut [i64],
    id_hash: &'a mut [u64],
    id_end: &'a mut [i64],
    ids: &'a mut [u8],
}

/// Safe views of `SignalColumns`.
struct SignalSlices<'a> {
    market: &'a mut [i64],
    timestamp: &'a mut [i64],
    kind: &'a mut [i8],
    direction: &'a mut [i8],
    strength: &'a mut [f64],
    conflicts: &'a mut [u8],
}

fn decode_markets(data: &[u8], out: MarketSlices) -> Outcome {
    let rows = out.price.len();
    let mut outcome = Outcome::default();
    let mut id = Vec::with_capacity(64);
    let mut scratch = Vec::with_capacity(64);
    let mut used = 0usize;
    let mut cursor = Cursor::at(data, 0);
    let mut row = 0;
    while cursor.position() < data.len() {
        outcome.line = row;
        if row >= rows {
            outcome.status = BAD_CALL;
            return outcome;
        }
        let start = cursor.position();
        let Ok(market) = records::market(&mut cursor, &mut id, &mut scratch) else {
            outcome.status = UNSURE;
            return outcome;
        };
        let end = line_end(data, cursor.position());
        let Some(room) = out.ids.get_mut(used..used + id.len() + 1) else {
            outcome.status = BAD_CALL;
            return outcome;
        };
        room[..id.len()].copy_from_slice(&id);
        room[id.len()] = b'\n';
        if id.contains(&b'\n') {
            outcome.newline_in_id = 1;
        }
        used += id.len();
        out.id_end[row] = used as i64;
        used += 1;
        out.id_hash[row] = fnv1a(&id);
        out.price[row] = market.price;
        out.liquidity[row] = market.liquidity;
        out.unknowns[row] = market.unknowns;
        out.closes_at[row] = market.closes_at;
        out.resolved[row] = u8::from(market.resolved);
        out.authority_is_clear[row] = u8::from(market.authority_is_clear);
        out.outcome_is_objective[row] = u8::from(market.outcome_is_objective);
        out.category[row] = market.category;
        out.line_start[row] = start as i64;
        out.line_end[row] = end as i64;
        row += 1;
        outcome.count = row;
    }
    outcome.ids_used = used;
    if let Some((line, same)) = first_repeat(&out.id_hash[..row], &out.ids[..used], &out.id_end[..row]) {
        // Two ids of one hash that differ (not a repeat) are left to msgspec as well.
        outcome.status = if same { REPEATED_ID } else { UNSURE };
        outcome.line = line;
    }
    outcome
}

/// The first line whose id hash an earlier line has, and whether the ids are the same; None
/// when every hash differs (found by sorting, which touches memory in order, rather than by
/// a table probed at random).
fn first_repeat(hashes: &[u64], ids: &[u8], id_end: &[i64]) -> Option<(usize, bool)> {
    let mut sorted = hashes.to_vec();
    sorted.sort_unstable();
    if sorted.windows(2).all(|pair| pair[0] != pair[1]) {
        return None;
    }
    let names = id_names(ids, id_end)?;
    let mut seen = IdTable::default();
    for (row, &hash) in hashes.iter().enumerate() {
        if let Some(&earlier) = seen.get(&hash) {
            return Some((row, names[earlier as usize] == names[row]));
        }
        seen.insert(hash, row as u32);
    }
    None
}

/// Each id of `ids` (written as a markets call writes them: each followed by a newline,
/// `id_end` just past each), or None if the ends do not fit `ids`.
fn id_names<'a>(ids: &'a [u8], id_end: &[i64]) -> Option<Vec<&'a [u8]>> {
    let mut names = Vec::with_capacity(id_end.len());
    let mut from = 0usize;
    for &end in id_end {
        let end = usize::try_from(end).ok()?;
        names.push(ids.get(from..end)?);
        from = end + 1;
    }
    Some(names)
}

/// Where the line just read ends, its newline left out (`after` is past that newline, or
/// at the end of the data for a last line without one).
fn line_end(data: &[u8], after: usize) -> usize {
    if after > 0 && data.get(after - 1) == Some(&b'\n') {
        after - 1
    } else {
        after
    }
}

/// Finds the row of a signal's market among the markets' ids. Signals usually come in
/// the markets' order, so the market after the last one found is tried first; a table of
/// all the ids is built only when that guess fails.
struct MarketFinder<'a> {
    names: Vec<&'a [u8]>,
    table: Option<IdTable>,
    last: Option<usize>,
}

impl<'a> MarketFinder<'a> {
    fn row(&mut self, id: &[u8]) -> i64 {
        let guesses = match self.last {
            Some(last) => [Some(last), Some(last + 1)],
            None => [Some(0), None],
        };
        for guess in guesses.into_iter().flatten() {
            if self.names.get(guess).is_some_and(|name| json::same_bytes(name, id)) {
                self.last = Some(guess);
                return guess as i64;
            }
        }
        let names = &self.names;
        let table = self.table.get_or_insert_with(|| {
            let mut table = IdTable::with_capacity_and_hasher(names.len(), Default::default());
            for (row, name) in names.iter().enumerate() {
                table.entry(fnv1a(name)).or_insert(row as u32);
            }
            table
        });
        match table.get(&fnv1a(id)) {
            Some(&found) if json::same_bytes(names[found as usize], id) => {
                self.last = Some(found as usize);
                i64::from(found)
            }
            _ => -1,
        }
    }
}

fn decode_signals(data: &[u8], ids: &[u8], id_end: &[i64], out: SignalSlices) -> Outcome {
    let rows = out.market.len();
    let mut outcome = Outcome::default();
    let Some(names) = id_names(ids, id_end) else {
        outcome.status = BAD_CALL;
        return outcome;
    };
    let mut markets = MarketFinder { names, table: None, last: None };
    let mut id = Vec::with_capacity(64);
    let mut scratch = Vec::with_capacity(64);
    let mut cursor = Cursor::at(data, 0);
    let mut row = 0;
    while cursor.position() < data.len() {
        outcome.line = row;
        if row >= rows {
            outcome.status = BAD_CALL;
            return outcome;
        }
        let Ok(signal) = records::signal(&mut cursor, &mut id, &mut scratch) else {
            outcome.status = UNSURE;
            return outcome;
        };
        let market = markets.row(&id);
        if market < 0 {
            outcome.strangers += 1;
        }
        out.market[row] = market;
        out.timestamp[row] = signal.timestamp;
        out.kind[row] = signal.kind as i8;
        out.direction[row] = signal.direction as i8;
        out.strength[row] = signal.strength;
        out.conflicts[row] = u8::from(signal.conflicts);
        row += 1;
        outcome.count = row;
    }
    outcome
}

/// Run `work`, turning a panic into `PANICKED` and writing the outcome through `outcome`.
fn guarded(outcome: *mut Outcome, work: impl FnOnce() -> Outcome) -> i32 {
    let result = catch_unwind(AssertUnwindSafe(work)).unwrap_or(Outcome {
        status: PANICKED,
        ..Outcome::default()
    });
    if !outcome.is_null() {
        // SAFETY: a non-null `outcome` points to one writable `Outcome` the caller owns
        // for the duration of the call (a ctypes structure passed by reference).
        unsafe { outcome.write(result) };
    }
    result.status
}

/// A mutable slice of `rows` elements at `pointer`, or None for a null pointer.
///
/// # Safety
/// A non-null `pointer` must point to `rows` initialised-or-writable, properly aligned
/// elements that nothing else reads or writes during the call, and that stay allocated
/// until it returns.
unsafe fn column<'a, T>(pointer: *mut T, rows: usize) -> Option<&'a mut [T]> {
    if pointer.is_null() {
        return None;
    }
    // SAFETY: the caller upholds this function's contract.
    Some(unsafe { std::slice::from_raw_parts_mut(pointer, rows) })
}

/// A read-only view of `len` bytes at `pointer` (empty for a null pointer with `len` 0).
///
/// # Safety
/// A non-null `pointer` must point to `len` readable bytes that stay allocated and
/// unchanged until the call returns.
unsafe fn bytes<'a>(pointer: *const u8, len: usize) -> Option<&'a [u8]> {
    if pointer.is_null() {
        return if len == 0 { Some(&[]) } else { None };
    }
    // SAFETY: the caller upholds this function's contract.
    Some(unsafe { std::slice::from_raw_parts(pointer, len) })
}

/// Decode `len` bytes of market lines at `data` into `columns`; see `Outcome`.
///
/// # Safety
/// `data` points to `len` readable bytes; `columns` points to one `MarketColumns` whose
/// non-null pointers each point to `rows` (`ids`: `ids_capacity`) writable elements of
/// their type, distinct from each other and from `data`; `outcome` is null or points to one
/// writable `Outcome`. All stay allocated, and untouched by anyone else, during the call.
#[no_mangle]
pub unsafe extern "C" fn pmb_decode_markets(
    data: *const u8,
    len: usize,
    columns: *const MarketColumns,
    outcome: *mut Outcome,
) -> i32 {
    guarded(outcome, || {
        let bad = Outcome { status: BAD_CALL, ..Outcome::default() };
        if columns.is_null() {
            return bad;
        }
        // SAFETY: per this function's contract, `columns` points to a readable
        // `MarketColumns`, `data` to `len` bytes, and each column pointer to `rows`
        // (`ids`: `ids_capacity`) writable, distinct elements for the whole call.
        let views = unsafe {
            let c = &*columns;
            let rows = c.rows;
            (
                bytes(data, len),
                column(c.price, rows),
                column(c.liquidity, rows),
                column(c.unknowns, rows),
                column(c.closes_at, rows),
                column(c.resolved, rows),
                column(c.authority_is_clear, rows),
                column(c.outcome_is_objective, rows),
                column(c.category, rows),
                column(c.line_start, rows),
                column(c.line_end, rows),
                column(c.id_hash, rows),
                column(c.id_end, rows),
                column(c.ids, c.ids_capacity),
            )
        };
        let (
            Some(data),
            Some(price),
            Some(liquidity),
            Some(unknowns),
            Some(closes_at),
            Some(resolved),
            Some(authority_is_clear),
            Some(outcome_is_objective),
            Some(category),
            Some(line_start),
            Some(line_end),
            Some(id_hash),
            Some(id_end),
            Some(ids),
        ) = views
        else {
            return bad;
        };
        decode_markets(
            data,
            MarketSlices {
                price,
                liquidity,
                unknowns,
                closes_at,
                resolved,
                authority_is_clear,
                outcome_is_objective,
                category,
                line_start,
                line_end,
                id_hash,
                id_end,
                ids,
            },
        )
    })
}

/// Decode `len` bytes of signal lines at `data` into `columns`, matching each signal's
/// market among `markets` ids (`ids`/`id_end` as a markets call wrote them).
///
/// # Safety
/// `data` points to `len` readable bytes, `ids` to `ids_len` readable bytes and `id_end` to
/// `markets` readable `i64`s; `columns` points to one `SignalColumns` whose non-null pointers
/// each point to `rows` writable elements of their type, distinct from each other and from
/// the inputs; `outcome` is null or points to one writable `Outcome`. All stay allocated,
/// and untouched by anyone else, during the call.
#[no_mangle]
pub unsafe extern "C" fn pmb_decode_signals(
    data: *const u8,
    len: usize,
    ids: *const u8,
    ids_len: usize,
    id_end: *const i64,
    markets: usize,
    columns: *const SignalColumns,
    outcome: *mut Outcome,
) -> i32 {
    guarded(outcome, || {
        let bad = Outcome { status: BAD_CALL, ..Outcome::default() };
        if columns.is_null() || (id_end.is_null() && markets > 0) {
            return bad;
        }
        // SAFETY: per this function's contract, the inputs are readable for their lengths
        // and each column pointer of `columns` points to `rows` writable, distinct elements
        // for the whole call; `id_end` is only read when `markets` > 0 (non-null then).
        let views = unsafe {
            let c = &*columns;
            let rows = c.rows;
            let ends: &[i64] = if markets == 0 {
                &[]
            } else {
                std::slice::from_raw_parts(id_end, markets)
            };
            (
                bytes(data, len),
                bytes(ids, ids_len),
                ends,
                column(c.market, rows),
                column(c.timestamp, rows),
                column(c.kind, rows),
                column(c.direction, rows),
                column(c.strength, rows),
                column(c.conflicts, rows),
            )
        };
        let (
            Some(data),
            Some(ids),
            ends,
            Some(market),
            Some(timestamp),
            Some(kind),
            Some(direction),
            Some(strength),
            Some(conflicts),
        ) = views
        else {
            return bad;
        };
        decode_signals(
            data,
            ids,
            ends,
            SignalSlices { market, timestamp, kind, direction, strength, conflicts },
        )
    })
}

/// The schema this decoder reads, as a NUL-terminated text that lives as long as the
/// library: pomabotd compares it with the text it derives from its models.
#[no_mangle]
pub extern "C" fn pmb_schema() -> *const c_char {
    static TEXT: OnceLock<CString> = OnceLock::new();
    TEXT.get_or_init(|| CString::new(schema::describe()).unwrap_or_default()).as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Markets {
        price: Vec<f64>,
        liquidity: Vec<f64>,
        unknowns: Vec<f64>,
        closes_at: Vec<i64>,
        resolved: Vec<u8>,
        authority: Vec<u8>,
        objective: Vec<u8>,
        category: Vec<u8>,
        line_start: Vec<i64>,
        line_end: Vec<i64>,
        id_hash: Vec<u64>,
        id_end: Vec<i64>,
        ids: Vec<u8>,
    }

    impl Markets {
        fn new(rows: usize, id_bytes: usize) -> Self {
            Markets {
                price: vec![0.0; rows],
                liquidity: vec![0.0; rows],
                unknowns: vec![0.0; rows],
                closes_at: vec![0; rows],
                resolved: vec![0; rows],
                authority: vec![0; rows],
                objective: vec![0; rows],
                category: vec![0; rows],
                line_start: vec![0; rows],
                line_end: vec![0; rows],
                id_hash: vec![0; rows],
                id_end: vec![0; rows],
                ids: vec![0; id_bytes],
            }
        }

        fn columns(&mut self) -> MarketColumns {
            MarketColumns {
                rows: self.price.len(),
                price: self.price.as_mut_ptr(),
                liquidity: self.liquidity.as_mut_ptr(),
                unknowns: self.unknowns.as_mut_ptr(),
                closes_at: self.closes_at.as_mut_ptr(),
                resolved: self.resolved.as_mut_ptr(),
                authority_is_clear: self.authority.as_mut_ptr(),
                outcome_is_objective: self.objective.as_mut_ptr(),
                category: self.category.as_mut_ptr(),
                line_start: self.line_start.as_mut_ptr(),
                line_end: self.line_end.as_mut_ptr(),
                id_hash: self.id_hash.as_mut_ptr(),
                id_end: self.id_end.as_mut_ptr(),
                ids: self.ids.as_mut_ptr(),
                ids_capacity: self.ids.len(),
            }
        }
    }

    fn markets(data: &[u8]) -> (Outcome, Markets) {
        let rows = data.iter().filter(|&&b| b == b'\n').count() + 1;
        let mut out = Markets::new(rows, data.len() + 1);
        let columns = out.columns();
        let mut outcome = Outcome::default();
        // SAFETY: every pointer comes from a live Vec of the stated length.
        unsafe { pmb_decode_markets(data.as_ptr(), data.len(), &columns, &mut outcome) };
        (outcome, out)
    }

    const LINES: &[u8] = b"{\"id\":\"a\",\"question\":\"\xc3\xa9?\",\"category\":\"Crypto\",\"price\":12.5,\"liquidity\":1e3,\"closes_at\":\"2026-06-01T00:00:00+02:00\",\"unknowns\":2}\n\
{\"id\":\"b\\u0000\",\"question\":\"q\",\"price\":0,\"liquidity\":0,\"outcome\":\"YES\",\"authority_is_clear\":false}\n";

    #[test]
    fn market_lines_become_columns() {
        let (outcome, out) = markets(LINES);
        assert_eq!((outcome.status, outcome.count), (DECODED, 2));
        assert_eq!(out.price[..2], [12.5, 0.0]);
        assert_eq!(out.liquidity[..2], [1000.0, 0.0]);
        assert_eq!(out.unknowns[..2], [2.0, 0.0]);
        assert_eq!(out.closes_at[0], 1_780_264_800_000_000);
        assert_eq!(out.closes_at[1], i64::MAX);
        assert_eq!((out.resolved[..2].to_vec(), out.authority[..2].to_vec()), (vec![0, 1], vec![1, 0]));
        assert_eq!(out.category[..2], [1, 8]);
        assert_eq!(&out.ids[..outcome.ids_used], b"a\nb\0\n");
        assert_eq!(out.id_end[..2], [1, 4]);
        assert_eq!(out.id_hash[0], fnv1a(b"a"));
    }

    #[test]
    fn a_repeated_id_is_reported_by_line() {
        let data = b"{\"id\":\"a\",\"question\":\"q\",\"price\":1,\"liquidity\":1}\n\
{\"id\":\"b\",\"question\":\"q\",\"price\":1,\"liquidity\":1}\n\
{\"id\":\"\\u0061\",\"question\":\"q\",\"price\":1,\"liquidity\":1}";
        let (outcome, _) = markets(data);
        assert_eq!((outcome.status, outcome.line), (REPEATED_ID, 2));
    }

    #[test]
    fn blank_lines_and_a_byte_order_mark_are_left_to_msgspec() {
        for data in [&b"\n"[..], b"  \n", b"\xef\xbb\xbf{}", b"{\"id\":\"a\",\"question\":\"q\",\"price\":1,\"liquidity\":1}\n\n"] {
            assert_eq!(markets(data).0.status, UNSURE);
        }
        assert_eq!(markets(b"").0, Outcome::default());
    }

    #[test]
    fn signals_find_their_markets() {
        let (market_outcome, out) = markets(LINES);
        let data = b"{\"market_id\":\"b\\u0000\",\"type\":\"procedural\",\"direction\":\"down\",\"strength\":2,\"timestamp\":\"2026-01-01T00:00:00Z\"}\n\
{\"market_id\":\"zz\",\"type\":\"procedural\",\"direction\":\"down\",\"strength\":2,\"timestamp\":\"2026-01-01T00:00:00Z\"}";
        let mut market = vec![0i64; 2];
        let mut timestamp = vec![0i64; 2];
        let mut kind = vec![0i8; 2];
        let mut direction = vec![0i8; 2];
        let mut strength = vec![0f64; 2];
        let mut conflicts = vec![0u8; 2];
        let columns = SignalColumns {
            rows: 2,
            market: market.as_mut_ptr(),
            timestamp: timestamp.as_mut_ptr(),
            kind: kind.as_mut_ptr(),
            direction: direction.as_mut_ptr(),
            strength: strength.as_mut_ptr(),
            conflicts: conflicts.as_mut_ptr(),
        };
        let mut outcome = Outcome::default();
        // SAFETY: every pointer comes from a live Vec of the stated length.
        let status = unsafe {
            pmb_decode_signals(data.as_ptr(), data.len(), out.ids.as_ptr(), market_outcome.ids_used,
                               out.id_end.as_ptr(), 2, &columns, &mut outcome)
        };
        assert_eq!((status, outcome.count, outcome.strangers), (DECODED, 2, 1));
        assert_eq!(market, [1, -1]);
        assert_eq!((kind[0], direction[0], strength[0]), (1, 1, 2.0));
    }

    #[test]
    fn null_pointers_are_refused_not_followed() {
        let mut outcome = Outcome::default();
        // SAFETY: null pointers are part of the contract: refused.
        let status = unsafe { pmb_decode_markets(std::ptr::null(), 5, std::ptr::null(), &mut outcome) };
        assert_eq!(status, BAD_CALL);
        let mut out = Markets::new(1, 4);
        let mut columns = out.columns();
        columns.price = std::ptr::null_mut();
        // SAFETY: as above; the other pointers come from live Vecs.
        let status = unsafe { pmb_decode_markets(LINES.as_ptr(), LINES.len(), &columns, std::ptr::null_mut()) };
        assert_eq!(status, BAD_CALL);
    }

    #[test]
    fn columns_too_small_are_a_bad_call_not_an_overflow() {
        let mut out = Markets::new(1, 100);
        let columns = out.columns();
        let mut outcome = Outcome::default();
        // SAFETY: every pointer comes from a live Vec of the stated length.
        unsafe { pmb_decode_markets(LINES.as_ptr(), LINES.len(), &columns, &mut outcome) };
        assert_eq!((outcome.status, outcome.line), (BAD_CALL, 1));
        let mut out = Markets::new(2, 2);
        let columns = out.columns();
        // SAFETY: as above.
        unsafe { pmb_decode_markets(LINES.as_ptr(), LINES.len(), &columns, &mut outcome) };
        assert_eq!(outcome.status, BAD_CALL);
    }

    /// A small deterministic generator (xorshift), for the fuzz-like tests.
    struct Bytes(u64);

    impl Bytes {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn every_truncation_is_read_or_declined_without_a_panic() {
        for cut in 0..LINES.len() {
            let (outcome, _) = markets(&LINES[..cut]);
            assert_ne!(outcome.status, PANICKED);
            assert_ne!(outcome.status, BAD_CALL);
            if outcome.status == DECODED && cut > 0 {
                // Only a cut at the end of the first line (or of both) leaves whole records.
                assert!(LINES[..cut].ends_with(b"}") || LINES[..cut].ends_with(b"}\n"), "{cut}");
            }
        }
    }

    #[test]
    fn random_bytes_and_invalid_utf8_never_panic() {
        let mut random = Bytes(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let mut data = LINES.to_vec();
            for _ in 0..(random.next() % 4 + 1) {
                let at = (random.next() as usize) % data.len();
                data[at] = match random.next() % 4 {
                    0 => 0xFF,
                    1 => 0xC3,
                    2 => b"\"\\{}[],:0.e-"[(random.next() % 12) as usize],
                    _ => random.next() as u8,
                };
            }
            let (outcome, _) = markets(&data);
            assert!(matches!(outcome.status, DECODED | UNSURE | REPEATED_ID), "{outcome:?}");
        }
    }

    #[test]
    fn the_schema_text_names_every_field() {
        let text = schema::describe();
        for field in schema::MARKET.iter().chain(schema::SIGNAL.iter()) {
            assert!(text.contains(&format!("{}:", field.name)));
        }
        assert!(text.starts_with("Market(unknown fields skipped; post_init "));
    }
}

//! The record schema this decoder was written for, declared once as tables.
//!
//! The parser reads each field by its `Kind`, and `describe` prints the tables in the form
//! pomabotd derives from its msgspec models (`pomabotd.engine.kernels.native`): pomabotd
//! uses this decoder only while the two texts are equal, and a test fails when they are not,
//! so a change to the models that this side does not know about is found rather than
//! decoded wrongly.

/// How a field's JSON value is read and checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// A string, valid UTF-8, of at least `min_length` characters (0 or 1 here).
    Str { min_length: usize },
    /// A float (a JSON integer converts), within the bounds.
    Float { ge: Option<f64>, le: Option<f64> },
    /// An integer (no fraction, no exponent), within the bounds.
    Int { ge: Option<i64>, le: Option<i64> },
    Bool,
    /// A time with a UTC offset (`tz=True`).
    AwareTime,
    /// One of the strings (kept in msgspec's sorted order); its code is its index in `codes`.
    Literal { values: &'static [&'static str], codes: &'static [&'static str] },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Field {
    pub name: &'static str,
    pub kind: Kind,
    /// `null` is allowed (`X | None`).
    pub nullable: bool,
    /// The default, as Python's `repr` writes it; `None` (the Rust one) for a required field.
    pub default: Option<&'static str>,
}

const fn field(name: &'static str, kind: Kind, nullable: bool, default: Option<&'static str>) -> Field {
    Field { name, kind, nullable, default }
}

/// `CATEGORIES` of the models: a market's category code is its index here (the last,
/// `other`, for anything else).
pub const CATEGORIES: [&str; 9] = [
    "politics", "crypto", "sports", "economics", "entertainment", "weather", "technology",
    "world", "other",
];
/// `SIGNAL_TYPES`: a signal's `kind` code is its index here.
pub const SIGNAL_TYPES: [&str; 5] =
    ["authoritative", "procedural", "quantitative", "interpretive", "speculative"];
/// The kernel's `DIRECTIONS`: a signal's `direction` code is its index here.
pub const DIRECTIONS: [&str; 3] = ["up", "down", "neutral"];
const SIDES: [&str; 2] = ["YES", "NO"];

const POINTS: Kind = Kind::Float { ge: Some(0.0), le: Some(100.0) };
const NON_NEGATIVE: Kind = Kind::Float { ge: Some(0.0), le: None };
const TEXT: Kind = Kind::Str { min_length: 0 };
const ID: Kind = Kind::Str { min_length: 1 };

/// Market's fields in declaration order; `M_*` index them.
pub const MARKET: [Field; 14] = [
    field("id", ID, false, None),
    field("question", TEXT, false, None),
    field("category", TEXT, false, Some("'other'")),
    field("price", POINTS, false, None),
    field("liquidity", NON_NEGATIVE, false, None),
    field("volume_24h", NON_NEGATIVE, false, Some("0.0")),
    field("closes_at", Kind::AwareTime, true, Some("None")),
    field("resolution_criteria", TEXT, true, Some("None")),
    field("authority_is_clear", Kind::Bool, false, Some("True")),
    field("outcome_is_objective", Kind::Bool, false, Some("True")),
    field("unknowns", Kind::Int { ge: Some(0), le: None }, false, Some("0")),
    field("outcome", Kind::Literal { values: &["NO", "YES"], codes: &SIDES }, true, Some("None")),
    field("yes_outcome", TEXT, true, Some("None")),
    field("no_outcome", TEXT, true, Some("None")),
];
pub const M_ID: usize = 0;
pub const M_CATEGORY: usize = 2;
pub const M_PRICE: usize = 3;
pub const M_LIQUIDITY: usize = 4;
pub const M_CLOSES_AT: usize = 6;
pub const M_AUTHORITY: usize = 8;
pub const M_OBJECTIVE: usize = 9;
pub const M_UNKNOWNS: usize = 10;
pub const M_OUTCOME: usize = 11;

/// Signal's fields in declaration order; `S_*` index them.
pub const SIGNAL: [Field; 8] = [
    field("market_id", ID, false, None),
    field(
        "type",
        Kind::Literal {
            values: &["authoritative", "interpretive", "procedural", "quantitative", "speculative"],
            codes: &SIGNAL_TYPES,
        },
        false,
        None,
    ),
    field(
        "direction",
        Kind::Literal { values: &["down", "neutral", "up"], codes: &DIRECTIONS },
        false,
        None,
    ),
    field("strength", Kind::Int { ge: Some(1), le: Some(5) }, false, None),
    field("timestamp", Kind::AwareTime, false, None),
    field("conflicts_with_existing", Kind::Bool, false, Some("False")),
    field("source", TEXT, true, Some("None")),
    field("description", TEXT, true, Some("None")),
];
pub const S_MARKET_ID: usize = 0;
pub const S_TYPE: usize = 1;
pub const S_DIRECTION: usize = 2;
pub const S_STRENGTH: usize = 3;
pub const S_TIMESTAMP: usize = 4;
pub const S_CONFLICTS: usize = 5;

/// What the models' `__post_init__` hooks do, as this decoder does it: `Market` maps its
/// category onto `CATEGORIES` (`category.strip().lower()`, else `other`), `Signal` has none.
/// pomabotd compares a digest of the hooks' source with `POST_INIT_DIGEST`.
pub const POST_INIT_DIGEST: &str = "78ef0cd36e19bd08";

fn kind_text(kind: &Kind) -> String {
    match kind {
        Kind::Str { min_length: 0 } => "str".to_string(),
        Kind::Str { min_length } => format!("str(min_length={min_length})"),
        Kind::Float { ge, le } => bounds("float", ge.map(|v| format!("{v:?}")), le.map(|v| format!("{v:?}"))),
        Kind::Int { ge, le } => bounds("int", ge.map(|v| v.to_string()), le.map(|v| v.to_string())),
        Kind::Bool => "bool".to_string(),
        Kind::AwareTime => "datetime(tz=True)".to_string(),
        Kind::Literal { values, .. } => {
            let quoted: Vec<String> = values.iter().map(|v| format!("'{v}'")).collect();
            format!("Literal[{}]", quoted.join(","))
        }
    }
}

fn bounds(name: &str, ge: Option<String>, le: Option<String>) -> String {
    let parts: Vec<String> = [ge.map(|v| format!("ge={v}")), le.map(|v| format!("le={v}"))]
        .into_iter()
        .flatten()
        .collect();
    if parts.is_empty() {
        name.to_string()
    } else {
        format!("{name}({})", parts.join(","))
    }
}

fn struct_text(name: &str, fields: &[Field], post_init: &str) -> String {
    let described: Vec<String> = fields
        .iter()
        .map(|field| {
            let mut kind = kind_text(&field.kind);
            if field.nullable {
                kind.push_str("|None");
            }
            format!("{}:{}={}", field.name, kind, field.default.unwrap_or("required"))
        })
        .collect();
    format!("{name}(unknown fields skipped; post_init {post_init}){{{}}}", described.join(","))
}

/// The whole schema as one text, in the form pomabotd derives from its models.
pub fn describe() -> String {
    [
        struct_text("Market", &MARKET, POST_INIT_DIGEST),
        struct_text("Signal", &SIGNAL, "none"),
        format!("categories {}", CATEGORIES.join(",")),
        format!("signal types {}", SIGNAL_TYPES.join(",")),
        format!("directions {}", DIRECTIONS.join(",")),
    ]
    .join("\n")
}

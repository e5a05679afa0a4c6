//! InfluxDB line protocol parsing:
//! `measurement[,tag=value...] field=value[,field=value...] [timestamp]`,
//! with the escaping rules and field types (float, `i` integer, `u`
//! unsigned, quoted string, boolean) that Telegraf and the InfluxDB clients
//! emit. Blank lines and `#` comments are skipped.
//!
//! Names and values are borrowed from the body unless they hold escapes, and
//! [`for_each_line`] reuses one [`Line`]: a body costs no allocation per line
//! beyond unescaped names and string fields.

use std::borrow::Cow;

use canopy_model::FieldVal;

/// One parsed line.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Line<'a> {
    /// The measurement and tags as written, escapes and all: the same text
    /// always names the same series, so a caller may look it up before
    /// (or instead of) [`Line::parse_series`].
    pub(crate) series: &'a str,
    /// Filled by [`Line::parse_series`].
    pub(crate) measurement: Cow<'a, str>,
    /// Sorted by key; filled by [`Line::parse_series`].
    pub(crate) tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    pub(crate) fields: Vec<(Cow<'a, str>, FieldVal)>,
    /// In the request's precision; `None` means "now".
    pub(crate) timestamp: Option<i64>,
}

/// Nanoseconds per unit of a precision parameter (`n`/`ns`, `u`/`us`, `ms`,
/// `s`, and InfluxDB 1's `m` and `h`).
pub(crate) fn precision_nanos(p: &str) -> Option<i64> {
    Some(match p {
        "" | "n" | "ns" => 1,
        "u" | "us" | "µ" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// A line that does not parse: its number (1-based), what is wrong, and the
/// start of the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct LineError(String);

impl From<LineError> for crate::error::ApiError {
    fn from(e: LineError) -> Self {
        crate::error::ApiError::invalid("body", e)
    }
}

/// Calls `f` with each line of `body` (its 1-based number and the parsed
/// line), in order; a line that does not parse stops it with an error naming
/// the line and what is wrong.
pub(crate) fn for_each_line<'a, E: From<LineError>>(
    body: &'a str,
    mut f: impl FnMut(usize, &mut Line<'a>) -> Result<(), E>,
) -> Result<(), E> {
    let mut line = Line::default();
    for (i, raw) in body.lines().enumerate() {
        let text = raw.trim_start();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        parse_line(text.trim_end_matches('\r'), &mut line).map_err(|e| LineError(format!("line {}: {e}: {:?}", i + 1, truncate(raw))))?;
        f(i + 1, &mut line)?;
    }
    Ok(())
}

/// Parses a whole body into owned lines.
#[cfg(test)]
pub(crate) fn parse(body: &str) -> Result<Vec<Line<'_>>, String> {
    let mut out = Vec::new();
    for_each_line(body, |n, l| {
        l.parse_series().map_err(|e| LineError(format!("line {n}: {e}")))?;
        out.push(l.clone());
        Ok::<_, LineError>(())
    })
    .map_err(|e| e.0)?;
    Ok(out)
}

/// The start of `s` (120 characters at most), for error messages.
pub(crate) fn truncate(s: &str) -> &str {
    match s.char_indices().nth(120) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Splits at the first unescaped, unquoted `delim` (an ASCII byte). Scans
/// bytes with memchr, not chars: every byte that matters is ASCII, and the
/// bytes of a multi-byte UTF-8 character never are (a char-by-char loop was
/// a fifth of line-protocol ingest).
fn split_unescaped(s: &str, delim: u8, quotes: bool) -> (&str, Option<&str>) {
    let b = s.as_bytes();
    let (mut i, mut in_quotes) = (0, false);
    while i < b.len() {
        let found = if quotes { memchr::memchr3(delim, b'\\', b'"', &b[i..]) } else { memchr::memchr2(delim, b'\\', &b[i..]) };
        let Some(at) = found.map(|off| i + off) else { break };
        match b[at] {
            // The escaped byte is skipped (of a multi-byte character, its
            // first byte: the rest never match).
            b'\\' => i = at + 2,
            b'"' if quotes => {
                in_quotes = !in_quotes;
                i = at + 1;
            }
            _ if in_quotes => i = at + 1,
            _ => return (&s[..at], Some(&s[at + 1..])),
        }
    }
    (s, None)
}

/// Removes backslash escapes of the given characters (and of backslash);
/// borrows when there are none.
fn unescape<'a>(s: &'a str, chars: &[char]) -> Cow<'a, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\\'
            && let Some(&n) = it.peek()
            && (chars.contains(&n) || n == '\\')
        {
            out.push(n);
            it.next();
            continue;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

/// Parses `line`'s fields and timestamp into `out` (its vectors reused);
/// its series is kept as written ([`Line::parse_series`] parses it).
fn parse_line<'a>(line: &'a str, out: &mut Line<'a>) -> Result<(), String> {
    out.fields.clear();
    let (series, rest) = split_unescaped(line, b' ', false);
    let rest = rest.ok_or("missing fields")?.trim_start_matches(' ');
    let (fields_part, ts_part) = split_unescaped(rest, b' ', true);
    out.series = series;
    let mut rest = Some(fields_part);
    while let Some(part) = rest {
        let (kv, next) = split_unescaped(part, b',', true);
        rest = next;
        let (k, v) = split_unescaped(kv, b'=', false);
        let v = v.ok_or_else(|| format!("field {k:?} has no value"))?;
        let k = unescape(k, &[',', '=', ' ']);
        if k.is_empty() {
            return Err("empty field key".into());
        }
        let value = field_value(v).map_err(|e| format!("field {k:?}: {e}"))?;
        out.fields.push((k, value));
    }
    if out.fields.is_empty() {
        return Err("missing fields".into());
    }
    out.timestamp = match ts_part.map(str::trim) {
        None | Some("") => None,
        Some(t) => Some(t.parse::<i64>().map_err(|_| format!("bad timestamp {t:?}"))?),
    };
    Ok(())
}

impl<'a> Line<'a> {
    /// Parses the measurement and tags of [`Line::series`].
    pub(crate) fn parse_series(&mut self) -> Result<(), String> {
        self.tags.clear();
        let (measurement, mut key) = split_unescaped(self.series, b',', false);
        self.measurement = unescape(measurement, &[',', ' ']);
        if self.measurement.is_empty() {
            return Err("missing measurement".into());
        }
        while let Some(rest) = key {
            let (kv, next) = split_unescaped(rest, b',', false);
            key = next;
            let (k, v) = split_unescaped(kv, b'=', false);
            let v = v.ok_or_else(|| format!("tag {k:?} has no value"))?;
            let (k, v) = (unescape(k, &[',', '=', ' ']), unescape(v, &[',', '=', ' ']));
            if k.is_empty() || v.is_empty() {
                return Err(format!("empty tag key or value in {kv:?}"));
            }
            self.tags.push((k, v));
        }
        self.tags.sort();
        Ok(())
    }
}

fn field_value(v: &str) -> Result<FieldVal, String> {
    if let Some(s) = v.strip_prefix('"') {
        let s = s.strip_suffix('"').ok_or("unterminated string")?;
        return Ok(FieldVal::Str(unescape(s, &['"']).into_owned()));
    }
    match v {
        "t" | "T" | "true" | "True" | "TRUE" => return Ok(FieldVal::Bool(true)),
        "f" | "F" | "false" | "False" | "FALSE" => return Ok(FieldVal::Bool(false)),
        _ => {}
    }
    if let Some(i) = v.strip_suffix('i') {
        return i.parse::<i64>().map(FieldVal::Int).map_err(|_| format!("bad integer {v:?}"));
    }
    if let Some(u) = v.strip_suffix('u') {
        let u = u.parse::<u64>().map_err(|_| format!("bad unsigned integer {v:?}"))?;
        return i64::try_from(u).map(FieldVal::Int).map_err(|_| format!("unsigned integer {v} is above {}", i64::MAX));
    }
    let f = v.parse::<f64>().map_err(|_| format!("bad value {v:?}"))?;
    if !f.is_finite() {
        return Err(format!("{v:?} is not a finite number"));
    }
    Ok(FieldVal::Float(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_types_tags_escapes_and_timestamps() {
        let body = "# comment\n\
                    cpu,host=a,region=us\\ west usage=1.5,n=3i,u=7u,ok=t,msg=\"a \\\"b\\\", c\" 1700000000000000000\n\
                    \n\
                    mem\\,x,t\\=k=v\\,w free=2 \n\
                    disk used=-1e3";
        let lines = parse(body).unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].measurement, "cpu");
        assert_eq!(lines[0].tags, vec![("host".into(), "a".into()), ("region".into(), "us west".into())]);
        assert_eq!(
            lines[0].fields,
            vec![
                ("usage".into(), FieldVal::Float(1.5)),
                ("n".into(), FieldVal::Int(3)),
                ("u".into(), FieldVal::Int(7)),
                ("ok".into(), FieldVal::Bool(true)),
                ("msg".into(), FieldVal::Str("a \"b\", c".into())),
            ]
        );
        assert_eq!(lines[0].timestamp, Some(1_700_000_000_000_000_000));
        assert_eq!(lines[1].measurement, "mem,x");
        assert_eq!(lines[1].tags, vec![("t=k".into(), "v,w".into())]);
        assert_eq!(lines[1].timestamp, None);
        assert_eq!(lines[2].fields, vec![("used".into(), FieldVal::Float(-1000.0))]);
    }

    #[test]
    fn splits_skip_escapes_quotes_and_multibyte_characters() {
        assert_eq!(split_unescaped("a,b", b',', false), ("a", Some("b")));
        assert_eq!(split_unescaped(r"a\,b,c", b',', false), (r"a\,b", Some("c")));
        assert_eq!(split_unescaped(r#"s="x,y",t=1"#, b',', true), (r#"s="x,y""#, Some("t=1")));
        assert_eq!(split_unescaped(r#"s="x,y",t=1"#, b',', false), (r#"s="x"#, Some(r#"y",t=1"#)), "quotes only count where asked");
        assert_eq!(split_unescaped(r#"s="a\"b c" 5"#, b' ', true), (r#"s="a\"b c""#, Some("5")), "an escaped quote stays inside");
        assert_eq!(split_unescaped("cpü\\ß x=1 2", b' ', false), ("cpü\\ß", Some("x=1 2")));
        assert_eq!(split_unescaped("naïve=ü", b'=', false), ("naïve", Some("ü")));
        assert_eq!(split_unescaped("no delimiter\\", b',', false), ("no delimiter\\", None));
        assert_eq!(split_unescaped("trailing\\", b' ', false), ("trailing\\", None));
    }

    #[test]
    fn bad_lines_are_named() {
        for (body, want) in [
            ("cpu", "line 1: missing fields"),
            ("ok v=1\ncpu v=", "line 2: field \"v\": bad value"),
            ("cpu v=1 12x", "bad timestamp"),
            ("cpu,host v=1", "tag \"host\" has no value"),
            ("cpu v=\"open", "unterminated string"),
            ("cpu v=99999999999999999999u", "bad unsigned"),
            ("cpu v=18446744073709551615u", "above"),
        ] {
            let err = parse(body).unwrap_err();
            assert!(err.contains(want), "{body:?}: {err}");
        }
        assert_eq!(precision_nanos("ms"), Some(1_000_000));
        assert_eq!(precision_nanos("fortnight"), None);
    }

    /// Damaged or random bodies: an error naming the line, never a panic.
    #[test]
    fn damaged_line_protocol_is_refused_without_panic() {
        let valid = vec![
            b"cpu,host=a,region=eu usage=1.5,count=3i,state=\"ok \\\"q\\\"\",up=true 1700000000000000000\nmem,host=b\\ c free=10i\n# c\n"
                .to_vec(),
            b"m v=1\nm,t=x u=2u,s=\"a=b,c\" -5\n".to_vec(),
        ];
        canopy_model::testing::fuzz_decoder("line protocol", &valid, 20_000, |b| {
            let text = String::from_utf8_lossy(b);
            let mut lines = 0;
            for_each_line(&text, |n, l| {
                l.parse_series().map_err(|e| LineError(format!("line {n}: {e}")))?;
                lines += 1;
                Ok::<_, LineError>(())
            })
            .map(|()| lines)
        });
    }
}

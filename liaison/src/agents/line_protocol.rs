//! InfluxDB line protocol parsing:
//! `measurement[,tag=value...] field=value[,field=value...] [timestamp]`,
//! with the escaping rules and field types (float, `i` integer, `u`
//! unsigned, quoted string, boolean) that Telegraf and the InfluxDB clients
//! emit. Blank lines and `#` comments are skipped.

use canopy_model::FieldVal;

/// One parsed line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Line {
    pub(crate) measurement: String,
    pub(crate) tags: Vec<(String, String)>,
    pub(crate) fields: Vec<(String, FieldVal)>,
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

/// Parses a whole body; the error names the line (1-based) and what is wrong.
pub(crate) fn parse(body: &str) -> Result<Vec<Line>, String> {
    let mut out = Vec::new();
    for (i, raw) in body.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_line(line.trim_end_matches('\r')).map_err(|e| format!("line {}: {e}: {:?}", i + 1, truncate(raw)))?);
    }
    Ok(out)
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(120) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Splits at the first unescaped, unquoted `delim`.
fn split_unescaped(s: &str, delim: char, quotes: bool) -> (&str, Option<&str>) {
    let mut escaped = false;
    let mut in_quotes = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if quotes && c == '"' {
            in_quotes = !in_quotes;
        } else if c == delim && !in_quotes {
            return (&s[..i], Some(&s[i + c.len_utf8()..]));
        }
    }
    (s, None)
}

fn split_all(s: &str, delim: char, quotes: bool) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = s;
    loop {
        let (head, tail) = split_unescaped(rest, delim, quotes);
        parts.push(head);
        match tail {
            Some(t) => rest = t,
            None => return parts,
        }
    }
}

/// Removes backslash escapes of the given characters (and of backslash).
fn unescape(s: &str, chars: &[char]) -> String {
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
    out
}

fn parse_line(line: &str) -> Result<Line, String> {
    let (series, rest) = split_unescaped(line, ' ', false);
    let rest = rest.ok_or("missing fields")?.trim_start_matches(' ');
    let (fields_part, ts_part) = split_unescaped(rest, ' ', true);
    let mut key = split_all(series, ',', false).into_iter();
    let measurement = unescape(key.next().unwrap_or_default(), &[',', ' ']);
    if measurement.is_empty() {
        return Err("missing measurement".into());
    }
    let mut tags = Vec::new();
    for kv in key {
        let (k, v) = split_unescaped(kv, '=', false);
        let v = v.ok_or_else(|| format!("tag {k:?} has no value"))?;
        let (k, v) = (unescape(k, &[',', '=', ' ']), unescape(v, &[',', '=', ' ']));
        if k.is_empty() || v.is_empty() {
            return Err(format!("empty tag key or value in {kv:?}"));
        }
        tags.push((k, v));
    }
    tags.sort();
    let mut fields = Vec::new();
    for kv in split_all(fields_part, ',', true) {
        let (k, v) = split_unescaped(kv, '=', false);
        let v = v.ok_or_else(|| format!("field {k:?} has no value"))?;
        let k = unescape(k, &[',', '=', ' ']);
        if k.is_empty() {
            return Err("empty field key".into());
        }
        fields.push((k.clone(), field_value(v).map_err(|e| format!("field {k:?}: {e}"))?));
    }
    if fields.is_empty() {
        return Err("missing fields".into());
    }
    let timestamp = match ts_part.map(str::trim) {
        None | Some("") => None,
        Some(t) => Some(t.parse::<i64>().map_err(|_| format!("bad timestamp {t:?}"))?),
    };
    Ok(Line { measurement, tags, fields, timestamp })
}

fn field_value(v: &str) -> Result<FieldVal, String> {
    if let Some(s) = v.strip_prefix('"') {
        let s = s.strip_suffix('"').ok_or("unterminated string")?;
        return Ok(FieldVal::Str(unescape(s, &['"'])));
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
}

//! Billing reports as CSV (RFC 4180, written by the `csv` crate, which
//! quotes what needs quoting).
//!
//! Invariants: one header row, then one row per group in the JSON's order;
//! numbers exactly as in the JSON (`cost_usd` as an exact decimal); a
//! missing group is an empty cell. A group that a spreadsheet would run as
//! a formula (starting with `=`, `+`, `-`, `@`, tab or carriage return) is
//! prefixed with `'`, so opening an export never runs a caller's text.

use super::group_by::{CSV_COLUMNS, Sums};
use crate::error::ApiError;

/// A cell that a spreadsheet will not read as a formula.
fn inert(value: &str) -> std::borrow::Cow<'_, str> {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}").into()
    } else {
        value.into()
    }
}

/// The report's CSV: `dimension` names the first column.
pub fn write(dimension: &str, rows: &[(Option<String>, Sums)]) -> Result<Vec<u8>, ApiError> {
    let mut out = csv::Writer::from_writer(Vec::new());
    let header = std::iter::once(dimension).chain(CSV_COLUMNS);
    out.write_record(header).map_err(ApiError::internal)?;
    for (group, sums) in rows {
        let first = inert(group.as_deref().unwrap_or("")).into_owned();
        let cells = sums.cells();
        out.write_record(std::iter::once(first.as_str()).chain(cells.iter().map(String::as_str)))
            .map_err(ApiError::internal)?;
    }
    out.into_inner()
        .map_err(|e| ApiError::Internal(format!("writing CSV: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_formulas() {
        let sums = Sums {
            requests: 2,
            cost_micros: 1_500_000,
            ..Default::default()
        };
        let rows = vec![
            (Some("a,\"b\"\nc".to_string()), sums.clone()),
            (Some("=cmd()".to_string()), sums.clone()),
            (None, sums),
        ];
        let text = String::from_utf8(write("user", &rows).unwrap()).unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let header = reader.headers().unwrap().clone();
        assert_eq!(&header[0], "user");
        assert_eq!(&header[10], "cost_usd");
        let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        assert_eq!(&records[0][0], "a,\"b\"\nc");
        assert_eq!(&records[1][0], "'=cmd()");
        assert_eq!(&records[2][0], "");
        assert_eq!(&records[2][1], "2");
        assert_eq!(&records[2][10], "1.500000");
    }
}

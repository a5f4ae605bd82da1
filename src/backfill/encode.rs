//! PostgreSQL's binary `COPY` format for converted rows.
//!
//! Binary rather than text or CSV: the server takes timestamps, booleans
//! and integers as they are instead of parsing them, and no value needs
//! escaping. Each row is encoded once, in the SQLite thread, into one buffer;
//! the rows that survive the PostgreSQL-side checks are then sent as slices
//! of it.

use crate::convert::Raw;
use crate::row::Cell;

/// The file header: signature, flags, header-extension length.
pub(crate) const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// The file trailer: a tuple with field count -1.
pub(crate) const TRAILER: &[u8] = &[0xff, 0xff];

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

fn field(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    buf.extend_from_slice(bytes);
}

/// Appends one tuple: the field count, then each field length-prefixed.
/// `raws` are the row's source values: JSON that arrived as text is sent as
/// that very text (already validated), which keeps numbers exactly as
/// written, beyond what an `f64` holds, and skips re-serialising.
pub(crate) fn encode_row(buf: &mut Vec<u8>, cells: &[Cell], raws: &[Raw<'_>]) {
    buf.extend_from_slice(&(cells.len() as i16).to_be_bytes());
    for (i, cell) in cells.iter().enumerate() {
        if let (Cell::Json(_), Some(Raw::Text(b) | Raw::Blob(b))) = (cell, raws.get(i)) {
            buf.extend_from_slice(&(b.len() as i32 + 1).to_be_bytes());
            buf.push(1);
            buf.extend_from_slice(b);
            continue;
        }
        match cell {
            Cell::Null => buf.extend_from_slice(&(-1i32).to_be_bytes()),
            Cell::Text(s) => field(buf, s.as_bytes()),
            Cell::Status(s) => field(buf, s.as_str().as_bytes()),
            Cell::Timestamp(t) => {
                field(buf, &(t.timestamp_micros() - PG_EPOCH_MICROS).to_be_bytes())
            }
            Cell::Bool(b) => field(buf, &[u8::from(*b)]),
            Cell::Int(i) => field(buf, &i.to_be_bytes()),
            Cell::Json(v) => {
                // jsonb's binary form is a version byte, then the JSON text;
                // the length is patched in once the text is written.
                let at = buf.len();
                buf.extend_from_slice(&[0, 0, 0, 0, 1]);
                serde_json::to_writer(&mut *buf, v).expect("writing JSON to a Vec cannot fail");
                let len = (buf.len() - at - 4) as i32;
                buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn encodes_each_kind() {
        let mut buf = Vec::new();
        encode_row(
            &mut buf,
            &[
                Cell::Null,
                Cell::Int(7),
                Cell::Bool(true),
                Cell::Timestamp(Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 1).unwrap()),
                Cell::Json(serde_json::json!(1)),
                Cell::Json(serde_json::json!(1.0)),
            ],
            &[
                Raw::Null,
                Raw::Integer(7),
                Raw::Integer(1),
                Raw::Integer(946_684_801),
                Raw::Integer(1),
                Raw::Text(b"1.00000000000000000001"),
            ],
        );
        let want: Vec<u8> = [
            &6i16.to_be_bytes()[..],
            &(-1i32).to_be_bytes(),
            &4i32.to_be_bytes(),
            &7i32.to_be_bytes(),
            &1i32.to_be_bytes(),
            &[1],
            &8i32.to_be_bytes(),
            &1_000_000i64.to_be_bytes(),
            &2i32.to_be_bytes(),
            b"\x011",
            &23i32.to_be_bytes(),
            b"\x011.00000000000000000001",
        ]
        .concat();
        assert_eq!(buf, want);
    }
}

//! How much memory calamine would need to read an old Excel (`.xls`) workbook, worked out from
//! its records before calamine reads it.
//!
//! calamine 0.38 reads every sheet of an `.xls` when it opens it, into a dense grid from the
//! first to the last used row and column: two cells far apart (or a DIMENSIONS record claiming
//! millions of rows) make a 5 KB file ask for gigabytes (the `reader` fuzz target found one
//! taking 13 GB and 40 s), and an allocation that fails aborts the process. So the records are
//! walked here the way calamine walks them (the globals up to their EOF for the sheets'
//! positions, then each sheet from its position, skipping nested substreams, CONTINUE records
//! joined to the one before), and the cells of the grids it would build are counted.

use std::io::Read;

/// Bytes calamine holds per cell of a grid (a `Cell<Data>` while collecting, then `Data`).
pub const BYTES_PER_CELL: u64 = 40;

const BOF: u16 = 0x0809;
const EOF: u16 = 0x000A;
const CONTINUE: u16 = 0x003C;
const BOUNDSHEET: u16 = 0x0085;
const DIMENSIONS: u16 = 0x0200;
const MULRK: u16 = 0x00BD;
const STRING: u16 = 0x0207;
/// Records whose data starts with the cell's row and column (u16 each): NUMBER, LABEL, RSTRING,
/// BOOLERR, RK, LABELSST, FORMULA.
const CELLS: [u16; 7] = [0x0203, 0x0204, 0x00D6, 0x0205, 0x027E, 0x00FD, 0x0006];

/// The cells calamine would hold for all the sheets of the `.xls` in `data` (an OLE file already
/// checked by `cfb`; every sheet is read at once), or `None` when its workbook stream cannot be
/// found or read (calamine then refuses it as well).
pub fn grid_cells(data: &[u8]) -> Option<u64> {
    let mut ole = cfb::CompoundFile::open(std::io::Cursor::new(data)).ok()?;
    let mut stream = Vec::new();
    let opened = ole
        .open_stream("Workbook")
        .or_else(|_| ole.open_stream("Book"));
    opened.ok()?.read_to_end(&mut stream).ok()?;
    let mut sheets = vec![];
    for (typ, rec) in Records::at(&stream, 0) {
        match typ {
            BOUNDSHEET if rec.len() >= 4 => sheets.push(u32_at(&rec, 0) as usize),
            EOF => break,
            _ => {}
        }
    }
    Some(
        sheets
            .into_iter()
            .filter(|&at| at < stream.len())
            .map(|at| sheet_grid(&stream, at))
            .fold(0u64, u64::saturating_add),
    )
}

/// The most cells of the grids calamine builds for the sheet at `at`: the room reserved from its
/// DIMENSIONS, and the span of its cells.
fn sheet_grid(stream: &[u8], at: usize) -> u64 {
    let mut reserved = 0u64;
    let mut span = Span::default();
    let (mut seen_bof, mut depth) = (false, 0usize);
    for (typ, rec) in Records::at(stream, at) {
        if depth > 0 {
            match typ {
                BOF => depth += 1,
                EOF => depth -= 1,
                _ => {}
            }
            continue;
        }
        match typ {
            BOF if seen_bof => depth += 1,
            BOF => seen_bof = true,
            DIMENSIONS => reserved = reserved.max(dimensions(&rec)),
            EOF => break,
            MULRK if rec.len() >= 6 => {
                let row = u16_at(&rec, 0);
                span.add(row, u16_at(&rec, 2));
                span.add(row, u16_at(&rec, rec.len() - 2));
            }
            t if CELLS.contains(&t) && rec.len() >= 4 => span.add(u16_at(&rec, 0), u16_at(&rec, 2)),
            STRING => {} // the value of the FORMULA before it, at that cell
            _ => {}
        }
    }
    reserved.max(span.cells())
}

/// Cells calamine reserves for a DIMENSIONS record, computed as it does (`parse_dimensions`,
/// then `end - start + 1` rows and columns in wrapping u32 arithmetic).
fn dimensions(rec: &[u8]) -> u64 {
    let (rf, rl, mut cf, cl) = match rec.len() {
        10 => (
            u32::from(u16_at(rec, 0)),
            u32::from(u16_at(rec, 2)),
            u32::from(u16_at(rec, 4)),
            u32::from(u16_at(rec, 6)),
        ),
        14 | 16 => (
            u32_at(rec, 0),
            u32_at(rec, 4),
            u32::from(u16_at(rec, 8)),
            u32::from(u16_at(rec, 10)),
        ),
        _ => return 0,
    };
    if 0xFF < cf || cl < cf {
        cf = 0;
    }
    if rl < 1 || cl < 1 {
        return 0;
    }
    let rows = (rl - 1).wrapping_sub(rf).wrapping_add(1);
    let cols = (cl - 1).wrapping_sub(cf).wrapping_add(1);
    u64::from(rows) * u64::from(cols)
}

/// The rows and columns a sheet's cells span.
#[derive(Default)]
struct Span {
    rows: Option<(u16, u16)>,
    cols: Option<(u16, u16)>,
}

impl Span {
    fn add(&mut self, row: u16, col: u16) {
        let widen = |r: &mut Option<(u16, u16)>, v: u16| {
            *r = Some(r.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))));
        };
        widen(&mut self.rows, row);
        widen(&mut self.cols, col);
    }

    fn cells(&self) -> u64 {
        match (self.rows, self.cols) {
            (Some((r0, r1)), Some((c0, c1))) => (u64::from(r1 - r0) + 1) * (u64::from(c1 - c0) + 1),
            _ => 0,
        }
    }
}

/// BIFF records from `at`: type and data, CONTINUE records joined to the one before, as
/// calamine's record iterator reads them; ends at a record cut short.
struct Records<'a> {
    stream: &'a [u8],
}

impl<'a> Records<'a> {
    fn at(stream: &'a [u8], at: usize) -> Self {
        Records {
            stream: &stream[at.min(stream.len())..],
        }
    }

    fn take(&mut self) -> Option<(u16, &'a [u8])> {
        if self.stream.len() < 4 {
            return None;
        }
        let typ = u16_at(self.stream, 0);
        let len = usize::from(u16_at(self.stream, 2));
        let data = self.stream.get(4..4 + len)?;
        self.stream = &self.stream[4 + len..];
        Some((typ, data))
    }
}

impl Iterator for Records<'_> {
    type Item = (u16, Vec<u8>);

    fn next(&mut self) -> Option<Self::Item> {
        let (typ, data) = self.take()?;
        let mut rec = data.to_vec();
        while self.stream.len() > 4 && u16_at(self.stream, 0) == CONTINUE {
            let (_, more) = self.take()?;
            rec.extend_from_slice(more);
        }
        Some((typ, rec))
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn biff8_dimensions(first_row: u32, rows_end: u32, first_col: u16, cols_end: u16) -> Vec<u8> {
        let mut r = first_row.to_le_bytes().to_vec();
        r.extend(rows_end.to_le_bytes());
        r.extend(first_col.to_le_bytes());
        r.extend(cols_end.to_le_bytes());
        r.extend([0, 0]);
        r
    }

    #[test]
    fn dimensions_count_as_calamine_reserves_them() {
        // Rows 0..100, columns 0..3 (the end values are one past the last).
        assert_eq!(dimensions(&biff8_dimensions(0, 100, 0, 3)), 300);
        // A first row after the last wraps around in calamine's u32 arithmetic: 4 billion rows.
        assert_eq!(
            dimensions(&biff8_dimensions(5, 1, 0, 1)),
            u64::from(u32::MAX) - 3
        );
        // A first column over 0xFF is read as 0.
        assert_eq!(dimensions(&biff8_dimensions(0, 1, 0x100, 0x200)), 0x200);
        assert_eq!(
            dimensions(&[0; 7]),
            0,
            "a record of another length is refused by calamine"
        );
    }

    #[test]
    fn a_span_counts_every_cell_between_the_extremes() {
        let mut span = Span::default();
        assert_eq!(span.cells(), 0);
        span.add(3, 2);
        assert_eq!(span.cells(), 1);
        span.add(65_535, 255);
        assert_eq!(span.cells(), 65_533 * 254);
    }
}

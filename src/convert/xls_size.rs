//! How much memory calamine would need to read an old Excel (`.xls`) workbook, worked out from
//! its records before calamine reads it.
//!
//! calamine 0.38 reads every sheet of an `.xls` when it opens it, into a dense grid from the
//! first to the last used row and column: two cells far apart (or a DIMENSIONS record claiming
//! millions of rows) make a 5 KB file ask for gigabytes (the `reader` fuzz target found one
//! taking 13 GB and 40 s), and an allocation that fails aborts the process. So the records are
//! walked here the way calamine walks them (the globals up to their EOF for the sheets'
//! positions, then each sheet from its position, skipping nested substreams; a record's own data
//! only, as calamine's parsers read it, its CONTINUE records skipped), and the cells calamine
//! would hold are counted: the room a DIMENSIONS record reserves, the list of cells, and the
//! grids of values and formulas from the first to the last used row and column.
//!
//! Not counted: the text of each cell. A LABELSST cell copies its shared string, so a file of
//! many cells naming one very long string still costs more than counted (bounded by the file's
//! size times the longest string, unlike a grid, which a few bytes make unbounded).

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
const FORMULA: u16 = 0x0006;
/// Records whose data starts with the cell's row and column (u16 each): NUMBER, LABEL, RSTRING,
/// BOOLERR, RK, LABELSST.
const CELLS: [u16; 6] = [0x0203, 0x0204, 0x00D6, 0x0205, 0x027E, 0x00FD];

/// Sheets looked at: calamine reads one per BOUNDSHEET record, and a workbook has at most a
/// few hundred; more is refused (each one can be walked again from the same position).
const MAX_SHEETS: usize = 4096;

/// The cells calamine would hold for all the sheets of the `.xls` in `data` (an OLE file already
/// checked by `cfb`; every sheet is read at once); 0 without a workbook stream; `None` when one
/// cannot be read or names thousands of sheets (the caller refuses the file).
///
/// calamine takes the first directory entry named `Workbook` (else `Book`), in any letter case,
/// wherever it is in the file; every such stream is counted and the largest taken.
pub fn grid_cells(data: &[u8]) -> Option<u64> {
    let mut ole = cfb::CompoundFile::open(std::io::Cursor::new(data)).ok()?;
    let named = |e: &cfb::Entry| {
        let name = e.name().split('\0').next().unwrap_or_default();
        e.is_stream()
            && (name.eq_ignore_ascii_case("Workbook") || name.eq_ignore_ascii_case("Book"))
    };
    let paths: Vec<_> = ole
        .walk()
        .filter(named)
        .map(|e| e.path().to_owned())
        .collect();
    // None at all: calamine refuses the file, or it is an encrypted .xlsx (an OLE file too).
    let mut most = 0;
    for path in paths {
        let mut stream = Vec::new();
        ole.open_stream(&path).ok()?.read_to_end(&mut stream).ok()?;
        most = most.max(workbook_cells(&stream)?);
    }
    Some(most)
}

/// The cells of every sheet of one workbook stream; `None` for more than [`MAX_SHEETS`].
fn workbook_cells(stream: &[u8]) -> Option<u64> {
    let mut sheets = vec![];
    for (typ, rec) in Records::at(stream, 0) {
        match typ {
            BOUNDSHEET if rec.len() >= 4 => sheets.push(u32_at(rec, 0) as usize),
            EOF => break,
            _ => {}
        }
    }
    if sheets.len() > MAX_SHEETS {
        return None;
    }
    // Each position walked once, counted as often as calamine reads it.
    let mut walked = std::collections::HashMap::new();
    let mut total = 0u64;
    for at in sheets.into_iter().filter(|&at| at < stream.len()) {
        let cells = *walked.entry(at).or_insert_with(|| sheet_cells(stream, at));
        total = total.saturating_add(cells);
    }
    Some(total)
}

/// The cells calamine holds at once for the sheet at `at`: the room reserved from its
/// DIMENSIONS, each cell record in its list, and the grids of values and of formulas over the
/// span of their cells.
fn sheet_cells(stream: &[u8], at: usize) -> u64 {
    let mut reserved = 0u64;
    let (mut values, mut formulas) = (Span::default(), Span::default());
    let mut listed = 0u64;
    // Where a STRING record (a formula's text value) lands: the last FORMULA's cell, (0, 0)
    // before any.
    let mut formula_at = (0u16, 0u16);
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
            DIMENSIONS => reserved = reserved.saturating_add(dimensions(rec)),
            EOF => break,
            MULRK if rec.len() >= 6 => {
                let row = u16_at(rec, 0);
                let (first, last) = (u16_at(rec, 2), u16_at(rec, rec.len() - 2));
                values.add(row, first);
                values.add(row, last);
                listed += u64::from(last.saturating_sub(first)) + 1;
            }
            STRING => {
                values.add(formula_at.0, formula_at.1);
                listed += 1;
            }
            FORMULA if rec.len() >= 4 => {
                formula_at = (u16_at(rec, 0), u16_at(rec, 2));
                values.add(formula_at.0, formula_at.1);
                formulas.add(formula_at.0, formula_at.1);
                listed += 2;
            }
            t if CELLS.contains(&t) && rec.len() >= 4 => {
                values.add(u16_at(rec, 0), u16_at(rec, 2));
                listed += 1;
            }
            _ => {}
        }
    }
    reserved
        .saturating_add(listed)
        .saturating_add(values.cells())
        .saturating_add(formulas.cells())
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

/// BIFF records from `at`: type and the record's own data, as calamine's record iterator reads
/// them (the CONTINUE records after one are taken with it, and calamine's parsers of the records
/// counted here read only its own data); ends at a record cut short.
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

impl<'a> Iterator for Records<'a> {
    type Item = (u16, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let record = self.take()?;
        while self.stream.len() > 4 && u16_at(self.stream, 0) == CONTINUE {
            self.take()?;
        }
        Some(record)
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

    fn record(typ: u16, data: &[u8]) -> Vec<u8> {
        let mut r = typ.to_le_bytes().to_vec();
        r.extend((data.len() as u16).to_le_bytes());
        r.extend(data);
        r
    }

    fn cell(typ: u16, row: u16, col: u16, rest: usize) -> Vec<u8> {
        let mut d = row.to_le_bytes().to_vec();
        d.extend(col.to_le_bytes());
        d.extend(vec![0; rest]);
        record(typ, &d)
    }

    /// A workbook stream: globals naming `sheets` sheets all at one position, then that sheet.
    fn workbook(sheets: usize, sheet: &[Vec<u8>]) -> Vec<u8> {
        let boundsheet_len = 4 + 8;
        let at = 4 + sheets * (4 + boundsheet_len) + 4 + 4;
        let mut s = record(BOF, &[0; 4]);
        for _ in 0..sheets {
            let mut d = (at as u32).to_le_bytes().to_vec();
            d.extend([0; 8]);
            s.extend(record(BOUNDSHEET, &d));
        }
        s.extend(record(EOF, &[]));
        s.extend(record(BOF, &[0; 4]));
        for r in sheet {
            s.extend_from_slice(r);
        }
        s.extend(record(EOF, &[]));
        s
    }

    #[test]
    fn cells_far_apart_count_their_whole_grid() {
        let near = workbook(1, &[cell(0x0203, 1, 1, 10), cell(0x0203, 2, 2, 10)]);
        // Two cells in the list, a 2 x 2 grid.
        assert_eq!(workbook_cells(&near), Some(2 + 4));
        let far = workbook(1, &[cell(0x0203, 0, 0, 10), cell(0x0203, 65_535, 255, 10)]);
        assert_eq!(workbook_cells(&far), Some(2 + 65_536 * 256));
    }

    #[test]
    fn a_formula_string_lands_on_the_last_formula_or_on_a1() {
        // A STRING before any FORMULA is a cell at (0, 0) for calamine.
        let sheet = [record(STRING, &[0; 4]), cell(0x0203, 60_000, 200, 10)];
        assert_eq!(workbook_cells(&workbook(1, &sheet)), Some(2 + 60_001 * 201));
        // After a FORMULA, at the formula's cell (which both grids then cover).
        let sheet = [cell(FORMULA, 60_000, 200, 20), record(STRING, &[0; 4])];
        assert_eq!(workbook_cells(&workbook(1, &sheet)), Some(3 + 1 + 1));
    }

    #[test]
    fn continue_records_do_not_hide_a_record_calamine_reads_alone() {
        // A 14-byte DIMENSIONS read as is by calamine, whatever CONTINUE follows it.
        let dims = record(DIMENSIONS, &biff8_dimensions(0, 0x0100_0000, 0, 0x100));
        let sheet = [dims, record(CONTINUE, &[1])];
        assert_eq!(
            workbook_cells(&workbook(1, &sheet)),
            Some(0x0100_0000 * 0x100)
        );
    }

    #[test]
    fn sheets_named_many_times_are_counted_each_time_and_walked_once() {
        let sheet = [cell(0x0203, 0, 0, 10), cell(0x0203, 9, 9, 10)];
        assert_eq!(workbook_cells(&workbook(3, &sheet)), Some(3 * (2 + 100)));
        assert_eq!(workbook_cells(&workbook(MAX_SHEETS + 1, &sheet)), None);
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

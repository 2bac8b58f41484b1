//! Reading recorded series: NAB's corpus layout (`data/<category>/<file>.csv` plus
//! `labels/combined_windows.json`) and plain CSV files (`timestamp,value`, or a wide
//! CSV with several value columns).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

/// One NAB data file: rows in file order (the scorer matches rows by position).
#[derive(Debug, Clone)]
pub struct DataFile {
    /// `realKnownCause`, `artificialNoAnomaly`, ...
    pub category: String,
    /// File name with its extension, e.g. `nyc_taxi.csv`.
    pub name: String,
    /// Timestamps exactly as written in the file.
    pub timestamps: Vec<String>,
    /// Values exactly as written in the file (copied verbatim into results).
    pub raw_values: Vec<String>,
    pub values: Vec<f64>,
    /// Anomaly windows as inclusive row ranges, in file order.
    pub windows: Vec<(usize, usize)>,
}

impl DataFile {
    /// `category/name`, the key NAB's label files use.
    pub fn key(&self) -> String {
        format!("{}/{}", self.category, self.name)
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// 1 inside an anomaly window, else 0 (NAB's informational `label` column).
    pub fn labels(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len()];
        for &(l, r) in &self.windows {
            for v in &mut out[l..=r.min(self.len().saturating_sub(1))] {
                *v = 1;
            }
        }
        out
    }
}

/// A NAB corpus: every data file under `data/`, sorted by key, with its windows.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub root: PathBuf,
    pub files: Vec<DataFile>,
}

impl Corpus {
    /// Reads `DIR/data/*/*.csv` and `DIR/labels/combined_windows.json`. Every data file
    /// must have an entry in the label file (an empty list when it has no anomaly).
    pub fn load(root: &Path) -> Result<Corpus> {
        let labels_path = root.join("labels").join("combined_windows.json");
        let text =
            std::fs::read_to_string(&labels_path).with_context(|| format!("reading {}", labels_path.display()))?;
        let windows: BTreeMap<String, Vec<(String, String)>> =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", labels_path.display()))?;
        let data = root.join("data");
        let mut files = Vec::new();
        let mut categories: Vec<PathBuf> = read_dir_sorted(&data)?.into_iter().filter(|p| p.is_dir()).collect();
        categories.sort();
        for cat in categories {
            let category = file_name(&cat)?;
            for path in read_dir_sorted(&cat)? {
                if path.extension().and_then(|e| e.to_str()) != Some("csv") {
                    continue;
                }
                let name = file_name(&path)?;
                let key = format!("{category}/{name}");
                let limits = windows
                    .get(&key)
                    .ok_or_else(|| anyhow!("{key}: no entry in {}", labels_path.display()))?;
                files.push(read_data_file(&path, &category, &name, limits)?);
            }
        }
        if files.is_empty() {
            bail!("no data files under {}", data.display());
        }
        Ok(Corpus {
            root: root.to_path_buf(),
            files,
        })
    }

    pub fn windows(&self) -> usize {
        self.files.iter().map(|f| f.windows.len()).sum()
    }

    pub fn rows(&self) -> usize {
        self.files.iter().map(DataFile::len).sum()
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    out.sort();
    Ok(out)
}

fn file_name(p: &Path) -> Result<String> {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("bad file name {}", p.display()))
}

fn read_data_file(path: &Path, category: &str, name: &str, limits: &[(String, String)]) -> Result<DataFile> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let table = Table::parse(&text).with_context(|| path.display().to_string())?;
    if table.columns.len() != 1 {
        bail!(
            "{}: expected `timestamp,value`, found {} value columns",
            path.display(),
            table.columns.len()
        );
    }
    let mut values = Vec::with_capacity(table.timestamps.len());
    for (i, v) in table.values[0].iter().enumerate() {
        values.push(v.ok_or_else(|| anyhow!("{}: row {}: missing value", path.display(), i + 2))?);
    }
    let stamps: Vec<Option<i64>> = table.timestamps.iter().map(|t| parse_timestamp(t)).collect();
    let mut windows = Vec::with_capacity(limits.len());
    for (a, b) in limits {
        let start = parse_timestamp(a).ok_or_else(|| anyhow!("{category}/{name}: bad window start {a:?}"))?;
        let end = parse_timestamp(b).ok_or_else(|| anyhow!("{category}/{name}: bad window end {b:?}"))?;
        let from = windows.last().map_or(0, |&(_, r): &(usize, usize)| r + 1);
        let w = window_rows(&stamps, from, start, end)
            .ok_or_else(|| anyhow!("{category}/{name}: window [{a}, {b}] matches no rows"))?;
        windows.push(w);
    }
    Ok(DataFile {
        category: category.to_string(),
        name: name.to_string(),
        timestamps: table.timestamps,
        raw_values: table.raw[0].clone(),
        values,
        windows,
    })
}

/// Maps a window given by timestamps to rows the way NAB's scorer does: it opens at the
/// first row (from `from` on) whose timestamp equals the start and closes at the first
/// row whose timestamp equals the end. When a limit is not a timestamp of the file,
/// the nearest row inside the limits is used instead.
pub fn window_rows(stamps: &[Option<i64>], from: usize, start: i64, end: i64) -> Option<(usize, usize)> {
    let tail = stamps.get(from..)?;
    let l = tail
        .iter()
        .position(|t| *t == Some(start))
        .or_else(|| tail.iter().position(|t| t.is_some_and(|t| t >= start)))?
        + from;
    let r = stamps[l..]
        .iter()
        .position(|t| *t == Some(end))
        .map(|i| i + l)
        .or_else(|| {
            stamps[l..]
                .iter()
                .rposition(|t| t.is_some_and(|t| t <= end))
                .map(|i| i + l)
        })?;
    (r >= l).then_some((l, r))
}

/// Parses `YYYY-MM-DD HH:MM:SS` (optionally `T`-separated, with fractional seconds) into
/// seconds since 1970-01-01, no time zone; or a plain number (Unix seconds).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<f64>() {
        return n.is_finite().then_some(n.floor() as i64);
    }
    let (date, time) = s.split_once([' ', 'T']).unwrap_or((s, "00:00:00"));
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let time = time.trim_end_matches('Z');
    let time = time.split_once('.').map_or(time, |(t, _)| t);
    let mut t = time.split(':');
    let hh: i64 = t.next()?.parse().ok()?;
    let mm: i64 = t.next().unwrap_or("0").parse().ok()?;
    let ss: i64 = t.next().unwrap_or("0").parse().ok()?;
    Some(days_from_civil(y, m, day) * 86_400 + hh * 3_600 + mm * 60 + ss)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = (if y >= 0 { y } else { y - 399 }) / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A CSV with a header: the first column is the timestamp (kept as text), every other
/// column a series. Empty or non-numeric cells are missing values.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub timestamp_header: String,
    pub columns: Vec<String>,
    pub timestamps: Vec<String>,
    /// `values[column][row]`.
    pub values: Vec<Vec<Option<f64>>>,
    /// The cells as written, `raw[column][row]`.
    pub raw: Vec<Vec<String>>,
}

impl Table {
    pub fn parse(text: &str) -> Result<Table> {
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let (_, header) = lines.next().ok_or_else(|| anyhow!("empty file"))?;
        let header = split_row(header.trim_start_matches('\u{feff}'));
        if header.len() < 2 {
            bail!("line 1: need a timestamp column and at least one value column");
        }
        let mut t = Table {
            timestamp_header: header[0].clone(),
            columns: header[1..].to_vec(),
            values: vec![Vec::new(); header.len() - 1],
            raw: vec![Vec::new(); header.len() - 1],
            ..Table::default()
        };
        for (i, line) in lines {
            let cells = split_row(line);
            if cells.len() != header.len() {
                bail!("line {}: {} cells, the header has {}", i + 1, cells.len(), header.len());
            }
            t.timestamps.push(cells[0].clone());
            for (c, cell) in cells[1..].iter().enumerate() {
                t.values[c].push(cell.parse::<f64>().ok().filter(|v| v.is_finite()));
                t.raw[c].push(cell.clone());
            }
        }
        Ok(t)
    }

    pub fn rows(&self) -> usize {
        self.timestamps.len()
    }
}

fn split_row(line: &str) -> Vec<String> {
    line.trim_end_matches('\r')
        .split(',')
        .map(|c| c.trim().trim_matches('"').to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Some(0));
        assert_eq!(parse_timestamp("2014-04-10 00:04:00"), Some(1_397_088_240));
        assert_eq!(parse_timestamp("2014-04-10 00:04:00.000000"), Some(1_397_088_240));
        assert_eq!(parse_timestamp("2014-04-10T00:04:00Z"), Some(1_397_088_240));
        assert_eq!(parse_timestamp("1397088240"), Some(1_397_088_240));
        assert_eq!(parse_timestamp("2014-13-10 00:00:00"), None);
        assert_eq!(parse_timestamp("nope"), None);
    }

    #[test]
    fn windows_map_to_first_matching_rows() {
        // A repeated timestamp (NAB's daylight-saving artifact) and a step back.
        let s: Vec<Option<i64>> = [0, 10, 20, 20, 30, 25, 40, 50].iter().map(|&v| Some(v)).collect();
        assert_eq!(window_rows(&s, 0, 20, 40), Some((2, 6)));
        assert_eq!(window_rows(&s, 0, 15, 45), Some((2, 6)), "limits between rows");
        assert_eq!(
            window_rows(&s, 3, 20, 30),
            Some((3, 4)),
            "search starts after the previous window"
        );
        assert_eq!(window_rows(&s, 0, 60, 70), None);
    }

    #[test]
    fn wide_csv_parses_with_missing_cells() {
        let t = Table::parse("time,a,b\n1,1.5,\n2,x,3\n").expect("parse");
        assert_eq!(t.columns, vec!["a", "b"]);
        assert_eq!(t.values[0], vec![Some(1.5), None]);
        assert_eq!(t.values[1], vec![None, Some(3.0)]);
        assert!(Table::parse("time,a\n1,2,3\n").is_err());
    }
}

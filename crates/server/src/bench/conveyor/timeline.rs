//! The conveyor bench's timeline picture: one row per workload and mode, decode activity (blue)
//! and the tool's run (orange) of one request each, on a shared time axis.
//!
//! Written as plain SVG rectangles rather than with plotters: plotters lays text out with a
//! font backend (system fontconfig or a bundled font file), a dependency this one picture of
//! bars and labels does not need.

use std::fmt::Write;

use crate::bench::conveyor::measure::Marks;

const WIDTH: f64 = 900.0;
const LEFT: f64 = 150.0;
const ROW: f64 = 26.0;

/// `rows`: (label, partial?, marks). The tool's bar starts at the call's first delta when
/// partial (the tool is running from then on), at its last delta when lazy, and ends when the
/// tool returned (`tool_wait` after the last delta); any space before the results is the rest
/// of the turn being decoded.
pub fn svg(rows: &[(String, bool, Marks)]) -> String {
    let span = rows.iter().map(|r| r.2.total).fold(0.1, f64::max);
    let x = |t: f64| LEFT + (WIDTH - LEFT - 20.0) * t / span;
    let height = 40.0 + ROW * rows.len() as f64;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" \
         fill=\"white\"/>\n<text x=\"{LEFT}\" y=\"16\">decode (blue) and tool (orange) of one \
         request per workload; seconds 0..{span:.1}</text>\n"
    );
    for (i, (label, partial, m)) in rows.iter().enumerate() {
        let y = 28.0 + ROW * i as f64;
        let _ = writeln!(out, "<text x=\"4\" y=\"{}\">{label}</text>", y + 14.0);
        let tool_start = if *partial { m.call_start } else { m.args_end };
        let bars = [
            (0.0, m.args_end, "#4477cc", 0.0),
            (tool_start, m.args_end + m.tool_wait, "#ee8833", 10.0),
            (m.results, m.total, "#4477cc", 0.0),
        ];
        for (a, b, color, dy) in bars {
            let w = (x(b) - x(a)).max(1.0);
            let _ = writeln!(
                out,
                "<rect x=\"{:.1}\" y=\"{}\" width=\"{w:.1}\" height=\"9\" fill=\"{color}\"/>",
                x(a),
                y + dy
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_labelled_row_of_three_bars_per_request() {
        let m = Marks {
            call_start: 0.2,
            args_end: 1.0,
            results: 1.5,
            total: 2.0,
            tool_wait: 0.3,
            tool_error: false,
            args_chars: 40,
        };
        let s = svg(&[
            ("code lazy".into(), false, m),
            ("code partial".into(), true, m),
        ]);
        assert_eq!(s.matches("<rect x=").count(), 6);
        assert!(s.contains(">code partial</text>") && s.ends_with("</svg>\n"));
        // The partial row's tool bar starts at the call's start (x of 0.2 s), the lazy one's
        // at its end.
        let x = |t: f64| format!("x=\"{:.1}\"", LEFT + (WIDTH - LEFT - 20.0) * t / 2.0);
        assert!(s.contains(&x(0.2)) && s.contains(&x(1.0)));
        // The lazy tool bar ends when the tool returned (0.3 s after the call), not at the
        // results: 0.3 s of the 2 s span over 730 px.
        assert!(s.contains("width=\"109.5\""), "{s}");
    }
}

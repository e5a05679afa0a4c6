//! The results chart (PNG): one bar per figure, the Canopy / VictoriaMetrics
//! ratio on a log scale around parity, green where Canopy is ahead.
//! Text uses DejaVu Sans (Debian `fonts-dejavu-core`, which `scripts/bench.sh`
//! installs); without the font the bars are still drawn.

use std::path::Path;

use ab_glyph::{Font, FontVec, PxScale, ScaleFont, point};

const W: usize = 1000;
const ROW: usize = 34;
const LEFT: usize = 300;
const RIGHT: usize = 60;
/// The log scale spans 1/100 .. 1000.
const LOG_MIN: f64 = -2.0;
const LOG_MAX: f64 = 3.0;

struct Canvas {
    w: usize,
    h: usize,
    px: Vec<u8>,
    font: Option<FontVec>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Canvas {
        let font = ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"]
            .iter()
            .chain(std::env::var("CANOPY_BENCH_FONT").ok().as_deref().into_iter().collect::<Vec<_>>().iter())
            .find_map(|p| std::fs::read(p).ok().and_then(|b| FontVec::try_from_vec(b).ok()));
        if font.is_none() {
            eprintln!("chart: DejaVuSans.ttf not found (apt-get install fonts-dejavu-core); drawing without text");
        }
        Canvas { w, h, px: vec![255; w * h * 3], font }
    }

    fn rect(&mut self, x0: usize, y0: usize, x1: usize, y1: usize, rgb: [u8; 3]) {
        for y in y0.min(self.h)..y1.min(self.h) {
            for x in x0.min(self.w)..x1.min(self.w) {
                let i = (y * self.w + x) * 3;
                self.px[i..i + 3].copy_from_slice(&rgb);
            }
        }
    }

    fn text(&mut self, x: f32, baseline: f32, size: f32, s: &str) {
        let Some(font) = &self.font else { return };
        let scaled = font.as_scaled(PxScale::from(size));
        let mut caret = x;
        let mut draws = Vec::new();
        for c in s.chars() {
            let id = scaled.glyph_id(c);
            let glyph = id.with_scale_and_position(PxScale::from(size), point(caret, baseline));
            caret += scaled.h_advance(id);
            if let Some(o) = font.outline_glyph(glyph) {
                let b = o.px_bounds();
                o.draw(|gx, gy, cov| draws.push((b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64, cov)));
            }
        }
        for (x, y, cov) in draws {
            if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
                let i = (y as usize * self.w + x as usize) * 3;
                for c in &mut self.px[i..i + 3] {
                    *c = (*c as f32 * (1.0 - cov)) as u8;
                }
            }
        }
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let file = std::io::BufWriter::new(std::fs::File::create(path)?);
        let mut enc = png::Encoder::new(file, self.w as u32, self.h as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()?.write_image_data(&self.px)?;
        Ok(())
    }
}

/// One bar: label, Canopy / VictoriaMetrics ratio, and whether higher is better.
pub(crate) struct Bar {
    pub(crate) label: String,
    pub(crate) ratio: f64,
    pub(crate) higher_is_better: bool,
}

fn x_of(ratio: f64) -> usize {
    let l = ratio.max(1e-9).log10().clamp(LOG_MIN, LOG_MAX);
    LEFT + ((l - LOG_MIN) / (LOG_MAX - LOG_MIN) * (W - LEFT - RIGHT) as f64) as usize
}

/// Draws the bars and writes the PNG.
pub(crate) fn draw(title: &str, bars: &[Bar], path: &Path) -> anyhow::Result<()> {
    let h = 70 + bars.len() * ROW + 40;
    let mut c = Canvas::new(W, h);
    c.text(20.0, 30.0, 18.0, title);
    c.text(20.0, 52.0, 13.0, "Canopy / VictoriaMetrics, log scale; green = Canopy ahead, red = behind");
    let top = 70;
    for decade in [-2i32, -1, 0, 1, 2, 3] {
        let x = x_of(10f64.powi(decade));
        c.rect(x, top - 4, x + 1, top + bars.len() * ROW, if decade == 0 { [0, 0, 0] } else { [210, 210, 210] });
        c.text(x as f32 - 10.0, (top + bars.len() * ROW + 18) as f32, 12.0, &format!("{}", 10f64.powi(decade)));
    }
    let one = x_of(1.0);
    for (i, b) in bars.iter().enumerate() {
        let y = top + i * ROW;
        c.text(20.0, (y + ROW / 2 + 5) as f32, 14.0, &b.label);
        let x = x_of(b.ratio);
        let ahead = if b.higher_is_better { b.ratio >= 1.0 } else { b.ratio <= 1.0 };
        let color = if ahead { [60, 160, 90] } else { [205, 70, 60] };
        let (x0, x1) = if x < one { (x, one) } else { (one, x.max(one + 2)) };
        c.rect(x0, y + 6, x1, y + ROW - 6, color);
        let label_x = if x < one { x0 as f32 - 48.0 } else { x1 as f32 + 6.0 };
        c.text(label_x, (y + ROW / 2 + 5) as f32, 13.0, &format!("{:.2}", b.ratio));
    }
    c.save(path)
}

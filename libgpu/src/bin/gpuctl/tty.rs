//! `gpuctl top`'s live view: the terminal (raw mode, alternate screen) and its keys.
//!
//! Owns: the refresh loop and key handling, through crossterm. Must not: compute anything the
//! one-shot output does not (the table is `top.rs`'s). The terminal is restored on every way
//! out (quit, error, panic unwinding through the guard).
//!
//! Keys: `q`, Esc or Ctrl-C quit; ←/→ (or `<`/`>`) move the sort column; `r` reverses the
//! order; `+`/`-` double/halve the refresh interval.

use crate::top::{rows, summary, Column, Sample, Sort, Table};
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::style::Print;
use crossterm::terminal::{self, Clear, ClearType, EnterAlternateScreen, LeaveAlternateScreen};
use crossterm::{cursor, execute, queue};
use std::io::Write;
use std::time::{Duration, Instant};

/// Shortest and longest refresh intervals `+`/`-` reach.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// Leaves raw mode and the alternate screen when dropped.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = execute!(std::io::stdout(), LeaveAlternateScreen, cursor::Show);
        let _ = terminal::disable_raw_mode();
    }
}

/// What a key asks for.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Quit,
    Redraw,
    Ignore,
}

/// Applies a key to the sort order and interval.
fn on_key(
    code: KeyCode,
    mods: KeyModifiers,
    columns: &[Column],
    sort: &mut Sort,
    interval: &mut Duration,
) -> Action {
    let at = columns.iter().position(|&c| c == sort.column).unwrap_or(0);
    let n = columns.len().max(1);
    let pick = |i: usize, sort: &mut Sort| {
        if let Some(&c) = columns.get(i % n) {
            // Largest first, except the client id.
            *sort = Sort {
                column: c,
                descending: c != Column::Client,
            };
        }
    };
    match code {
        KeyCode::Char('q') | KeyCode::Esc => Action::Quit,
        KeyCode::Char('c') if mods.contains(KeyModifiers::CONTROL) => Action::Quit,
        KeyCode::Right | KeyCode::Char('>') => {
            pick(at + 1, sort);
            Action::Redraw
        }
        KeyCode::Left | KeyCode::Char('<') => {
            pick(at + n - 1, sort);
            Action::Redraw
        }
        KeyCode::Char('r') => {
            sort.descending = !sort.descending;
            Action::Redraw
        }
        KeyCode::Char('+') => {
            *interval = (*interval * 2).min(MAX_INTERVAL);
            Action::Redraw
        }
        KeyCode::Char('-') => {
            *interval = (*interval / 2).max(MIN_INTERVAL);
            Action::Redraw
        }
        _ => Action::Ignore,
    }
}

/// Draws the screen: summary, help line, table (cut to the terminal's size).
fn draw(
    out: &mut impl Write,
    cur: &Sample,
    table: Option<&mut Table>,
    sort: Sort,
    interval: Duration,
) -> std::io::Result<()> {
    let (width, height) = terminal::size().unwrap_or((80, 24));
    let mut lines = summary(cur, table.as_ref().map_or(0, |t| t.rows.len()));
    let sort_name = table
        .as_ref()
        .map_or_else(String::new, |t| t.heading(sort.column));
    lines.push(format!(
        "every {:.1}s, sort {sort_name} {}; keys: <-/-> sort column, r reverse, +/- interval, q quit",
        interval.as_secs_f64(),
        if sort.descending { "desc" } else { "asc" },
    ));
    lines.push(String::new());
    match table {
        Some(t) => {
            t.sort(sort);
            lines.extend(t.lines(sort));
        }
        None => lines.push("sampling...".into()),
    }
    queue!(out, Clear(ClearType::All))?;
    for (row, l) in lines.iter().take(usize::from(height)).enumerate() {
        let shown: String = l.chars().take(usize::from(width)).collect();
        queue!(out, cursor::MoveTo(0, row as u16), Print(shown))?;
    }
    out.flush()
}

/// Runs the live view until the user quits; `read` takes one reading of the root stats.
pub fn run(
    mut read: impl FnMut() -> Result<Sample, String>,
    mut interval: Duration,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("terminal: {e}");
    terminal::enable_raw_mode().map_err(io)?;
    let _restore = Restore;
    let mut out = std::io::stdout();
    execute!(out, EnterAlternateScreen, cursor::Hide).map_err(io)?;
    let mut sort = Sort::default();
    let mut prev = read()?;
    let mut table: Option<Table> = None;
    let mut shown = prev.clone();
    loop {
        draw(&mut out, &shown, table.as_mut(), sort, interval).map_err(io)?;
        let next = prev.at + interval;
        let wait = next.saturating_duration_since(Instant::now());
        if event::poll(wait).map_err(io)? {
            if let Event::Key(k) = event::read().map_err(io)? {
                if k.kind == KeyEventKind::Release {
                    continue;
                }
                let columns = table.as_ref().map(Table::columns).unwrap_or_default();
                if on_key(k.code, k.modifiers, &columns, &mut sort, &mut interval) == Action::Quit {
                    return Ok(());
                }
            }
            continue;
        }
        let cur = read()?;
        table = Some(rows(&prev, &cur));
        shown = cur.clone();
        prev = cur;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_move_the_sort_column_reverse_it_and_quit() {
        let cols = [
            Column::Client,
            Column::Engine(0),
            Column::Engine(1),
            Column::Vram,
        ];
        let mut sort = Sort::default();
        let mut iv = Duration::from_secs(1);
        let none = KeyModifiers::NONE;
        assert_eq!(
            on_key(KeyCode::Right, none, &cols, &mut sort, &mut iv),
            Action::Redraw
        );
        assert_eq!(sort.column, Column::Engine(1));
        on_key(KeyCode::Char('>'), none, &cols, &mut sort, &mut iv);
        on_key(KeyCode::Right, none, &cols, &mut sort, &mut iv);
        assert_eq!(sort.column, Column::Client, "wraps around");
        assert!(!sort.descending, "client ids ascend");
        on_key(KeyCode::Left, none, &cols, &mut sort, &mut iv);
        assert_eq!(
            sort,
            Sort {
                column: Column::Vram,
                descending: true
            }
        );
        on_key(KeyCode::Char('r'), none, &cols, &mut sort, &mut iv);
        assert!(!sort.descending);
        on_key(KeyCode::Char('-'), none, &cols, &mut sort, &mut iv);
        assert_eq!(iv, Duration::from_millis(500));
        on_key(KeyCode::Char('+'), none, &cols, &mut sort, &mut iv);
        assert_eq!(iv, Duration::from_secs(1));
        assert_eq!(
            on_key(KeyCode::Char('x'), none, &cols, &mut sort, &mut iv),
            Action::Ignore
        );
        assert_eq!(
            on_key(KeyCode::Char('q'), none, &cols, &mut sort, &mut iv),
            Action::Quit
        );
        assert_eq!(
            on_key(KeyCode::Esc, none, &cols, &mut sort, &mut iv),
            Action::Quit
        );
        let ctrl = KeyModifiers::CONTROL;
        assert_eq!(
            on_key(KeyCode::Char('c'), ctrl, &cols, &mut sort, &mut iv),
            Action::Quit
        );
    }
}

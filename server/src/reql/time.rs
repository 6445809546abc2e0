//! Time terms: constructors (`now`, `time`, `epoch_time`, `iso8601`),
//! conversions, parts, `in_timezone`, `during`, arithmetic on times, and
//! the weekday and month constants.
//!
//! A time is an instant (seconds since the epoch, kept to the millisecond
//! as RethinkDB does) and a `±HH:MM` offset that only affects how its parts
//! and ISO 8601 form read. Calendar arithmetic is proleptic Gregorian
//! (Howard Hinnant's days-from-civil algorithms).

use std::collections::BTreeMap;

use photondb_datum::Datum;

use super::error::{Frame, ReqlError};
use super::eval::TypeMismatch;
use super::eval::{arity, Context, Value};
use super::term::Term;

pub const ISO8601: u64 = 99;
pub const TO_ISO8601: u64 = 100;
pub const EPOCH_TIME: u64 = 101;
pub const TO_EPOCH_TIME: u64 = 102;
pub const NOW: u64 = 103;
pub const IN_TIMEZONE: u64 = 104;
pub const DURING: u64 = 105;
pub const DATE: u64 = 106;
pub const MONDAY: u64 = 107;
pub const SUNDAY: u64 = 113;
pub const JANUARY: u64 = 114;
pub const DECEMBER: u64 = 125;
pub const TIME_OF_DAY: u64 = 126;
pub const TIMEZONE: u64 = 127;
pub const YEAR: u64 = 128;
pub const MONTH: u64 = 129;
pub const DAY: u64 = 130;
pub const DAY_OF_WEEK: u64 = 131;
pub const DAY_OF_YEAR: u64 = 132;
pub const HOURS: u64 = 133;
pub const MINUTES: u64 = 134;
pub const SECONDS: u64 = 135;
pub const TIME: u64 = 136;

pub use photondb_datum::json::truncate_to_millis;

fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Parses `Z`, `±HH`, `±HH:MM` or `±HHMM` into seconds east of UTC and the
/// canonical `±HH:MM` form.
pub fn parse_timezone(text: &str) -> Result<(i64, String), ReqlError> {
    if text == "Z" || text == "z" {
        return Ok((0, "+00:00".into()));
    }
    let invalid = || ReqlError::logic(format!("Invalid time zone `{text}`."));
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => {
            return Err(ReqlError::logic(format!(
                "Timezone `{text}` does not start with `-` or `+`."
            )))
        }
    };
    let digits: String = rest.chars().filter(|character| *character != ':').collect();
    if !digits.chars().all(|character| character.is_ascii_digit())
        || !(digits.len() == 2 || digits.len() == 4)
    {
        return Err(invalid());
    }
    let hours: i64 = digits[..2].parse().map_err(|_| invalid())?;
    let minutes: i64 = if digits.len() == 4 {
        digits[2..].parse().map_err(|_| invalid())?
    } else {
        0
    };
    if hours > 23 {
        return Err(ReqlError::logic(format!("Hours out of range in `{text}`.")));
    }
    if minutes > 59 {
        return Err(ReqlError::logic(format!(
            "Minutes out of range in `{text}`."
        )));
    }
    // RFC 3339: "-00:00" means an unknown offset, which a time cannot have.
    if sign < 0 && hours == 0 && minutes == 0 {
        return Err(ReqlError::logic(format!(
            "`{text}` is not a valid time offset."
        )));
    }
    let offset = sign * (hours * 3600 + minutes * 60);
    let canonical = format!(
        "{}{:02}:{:02}",
        if sign < 0 { '-' } else { '+' },
        hours,
        minutes
    );
    Ok((offset, canonical))
}

fn offset_of(timezone: &str) -> i64 {
    parse_timezone(timezone).map_or(0, |(offset, _)| offset)
}

/// Local calendar parts of a time: (year, month, day, seconds into the day).
fn local_parts(epoch_seconds: f64, timezone: &str) -> (i64, i64, i64, f64) {
    let local = epoch_seconds + offset_of(timezone) as f64;
    let days = (local / 86_400.0).floor() as i64;
    let seconds_of_day = local - days as f64 * 86_400.0;
    let (year, month, day) = civil_from_days(days);
    (year, month, day, seconds_of_day)
}

pub fn to_iso8601(epoch_seconds: f64, timezone: &str) -> Result<String, ReqlError> {
    let (year, month, day, seconds_of_day) = local_parts(epoch_seconds, timezone);
    if !(0..=9999).contains(&year) {
        return Err(ReqlError::logic(format!(
            "Year `{year}` out of valid ISO 8601 range [0, 9999]."
        )));
    }
    let whole = seconds_of_day.floor() as i64;
    let millis = ((seconds_of_day - whole as f64) * 1000.0).round() as i64;
    let (whole, millis) = if millis >= 1000 {
        (whole + 1, millis - 1000)
    } else {
        (whole, millis)
    };
    let fraction = if millis == 0 {
        String::new()
    } else {
        format!(".{millis:03}")
    };
    Ok(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}{fraction}{timezone}",
        whole / 3600,
        whole / 60 % 60,
        whole % 60
    ))
}

/// Parses the ISO 8601 forms RethinkDB accepts: a date, or a date and time
/// with optional fraction and time zone.
pub fn parse_iso8601(text: &str, default_timezone: Option<&str>) -> Result<Datum, ReqlError> {
    let invalid = || ReqlError::logic(format!("Invalid date string `{text}`."));
    let (date, rest) = text.split_at(text.find('T').unwrap_or(text.len()));
    let date_parts: Vec<&str> = date.split('-').collect();
    let (year, month, day) = match date_parts[..] {
        [year, month, day] if year.len() == 4 && month.len() == 2 && day.len() == 2 => (
            year.parse::<i64>().map_err(|_| invalid())?,
            month.parse::<i64>().map_err(|_| invalid())?,
            day.parse::<i64>().map_err(|_| invalid())?,
        ),
        _ => return Err(invalid()),
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return Err(invalid());
    }
    let mut seconds_of_day = 0.0;
    let mut timezone = None;
    if let Some(time) = rest.strip_prefix('T') {
        let zone_at = time.find(['Z', 'z', '+', '-']).unwrap_or(time.len());
        let (clock, zone) = time.split_at(zone_at);
        if !zone.is_empty() {
            timezone = Some(zone.to_owned());
        }
        let clock_parts: Vec<&str> = clock.split(':').collect();
        let number = |part: &str| part.parse::<f64>().map_err(|_| invalid());
        seconds_of_day = match clock_parts[..] {
            [hours, minutes] => number(hours)? * 3600.0 + number(minutes)? * 60.0,
            [hours, minutes, seconds] => {
                number(hours)? * 3600.0 + number(minutes)? * 60.0 + number(seconds)?
            }
            _ => return Err(invalid()),
        };
    }
    let timezone = match timezone.or_else(|| default_timezone.map(str::to_owned)) {
        Some(timezone) => timezone,
        None => {
            return Err(ReqlError::logic(
                "ISO 8601 string has no time zone, and no default time zone was provided.",
            ))
        }
    };
    let (offset, canonical) = parse_timezone(&timezone)?;
    let epoch =
        days_from_civil(year, month, day) as f64 * 86_400.0 + seconds_of_day - offset as f64;
    Ok(Datum::Time {
        epoch_seconds: truncate_to_millis(epoch),
        timezone: canonical,
    })
}

fn expect_time(datum: Datum) -> Result<(f64, String), ReqlError> {
    match datum {
        Datum::Time {
            epoch_seconds,
            timezone,
        } => Ok((epoch_seconds, timezone)),
        other => Err(ReqlError::logic(format!(
            "Expected type PTYPE<TIME> but found {}.",
            other.type_name()
        ))),
    }
}

fn number(datum: &Datum) -> Result<f64, ReqlError> {
    match datum {
        Datum::Number(value) => Ok(*value),
        other => Err(other.wrong_type("NUMBER")),
    }
}

impl Context {
    /// Evaluates the time terms; `None` for any other term.
    pub async fn time_term(
        &self,
        term_type: u64,
        args: &[Term],
        optargs: &BTreeMap<String, Term>,
    ) -> Option<Result<Value, ReqlError>> {
        if (MONDAY..=SUNDAY).contains(&term_type) {
            return Some(Ok(Value::Datum(Datum::Number(
                (term_type - MONDAY + 1) as f64,
            ))));
        }
        if (JANUARY..=DECEMBER).contains(&term_type) {
            return Some(Ok(Value::Datum(Datum::Number(
                (term_type - JANUARY + 1) as f64,
            ))));
        }
        let result = match term_type {
            NOW => arity(args, 0, 0).map(|()| {
                Value::Datum(Datum::Time {
                    epoch_seconds: self.now,
                    timezone: "+00:00".into(),
                })
            }),
            EPOCH_TIME => self.epoch_time(args).await,
            TIME => self.time_constructor(args).await,
            ISO8601 => self.iso8601(args, optargs).await,
            TO_ISO8601 | TO_EPOCH_TIME | TIMEZONE | DATE | TIME_OF_DAY | YEAR | MONTH | DAY
            | DAY_OF_WEEK | DAY_OF_YEAR | HOURS | MINUTES | SECONDS => {
                self.time_part(term_type, args).await
            }
            IN_TIMEZONE => self.in_timezone(args).await,
            DURING => self.during(args, optargs).await,
            _ => return None,
        };
        Some(result)
    }

    async fn epoch_time(&self, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 1, 1)?;
        let seconds = number(&self.datum_argument(args, 0).await?)
            .map_err(|error| error.within(Frame::Position(0)))?;
        Ok(Value::Datum(Datum::Time {
            epoch_seconds: truncate_to_millis(seconds),
            timezone: "+00:00".into(),
        }))
    }

    async fn time_constructor(&self, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 4, 7)?;
        if args.len() != 4 && args.len() != 7 {
            return Err(ReqlError::logic(format!(
                "Got {} arguments to TIME (expected 4 or 7).",
                args.len()
            )));
        }
        let mut parts = Vec::with_capacity(args.len() - 1);
        for index in 0..args.len() - 1 {
            parts.push(
                number(&self.datum_argument(args, index).await?)
                    .map_err(|error| error.within(Frame::Position(index)))?,
            );
        }
        let timezone = self.string_argument(args, args.len() - 1).await?;
        let (offset, canonical) = parse_timezone(&timezone)?;
        let (hours, minutes, seconds) = if parts.len() == 6 {
            (parts[3], parts[4], parts[5])
        } else {
            (0.0, 0.0, 0.0)
        };
        let days = days_from_civil(parts[0] as i64, parts[1] as i64, parts[2] as i64);
        let epoch =
            days as f64 * 86_400.0 + hours * 3600.0 + minutes * 60.0 + seconds - offset as f64;
        Ok(Value::Datum(Datum::Time {
            epoch_seconds: truncate_to_millis(epoch),
            timezone: canonical,
        }))
    }

    async fn iso8601(
        &self,
        args: &[Term],
        optargs: &BTreeMap<String, Term>,
    ) -> Result<Value, ReqlError> {
        arity(args, 1, 1)?;
        let text = self.string_argument(args, 0).await?;
        let default = match self.optional_datum(optargs, "default_timezone").await? {
            Some(Datum::String(zone)) => Some(zone),
            Some(other) => return Err(other.wrong_type("STRING")),
            None => None,
        };
        parse_iso8601(&text, default.as_deref()).map(Value::Datum)
    }

    async fn time_part(&self, term_type: u64, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 1, 1)?;
        let (epoch, timezone) = expect_time(self.datum_argument(args, 0).await?)
            .map_err(|error| error.within(Frame::Position(0)))?;
        let (year, month, day, seconds_of_day) = local_parts(epoch, &timezone);
        // RethinkDB's calendar (boost's) covers these years only.
        if !(1400..=10000).contains(&year) && !matches!(term_type, TO_EPOCH_TIME | TIMEZONE) {
            return Err(ReqlError::logic(
                "Error in time logic: Year is out of valid range: 1400..10000.",
            ));
        }
        let days = days_from_civil(year, month, day);
        Ok(Value::Datum(match term_type {
            TO_ISO8601 => Datum::String(to_iso8601(epoch, &timezone)?),
            TO_EPOCH_TIME => Datum::Number(epoch),
            TIMEZONE => Datum::String(timezone),
            DATE => Datum::Time {
                epoch_seconds: days as f64 * 86_400.0 - offset_of(&timezone) as f64,
                timezone,
            },
            TIME_OF_DAY => Datum::Number(truncate_to_millis(seconds_of_day)),
            YEAR => Datum::Number(year as f64),
            MONTH => Datum::Number(month as f64),
            DAY => Datum::Number(day as f64),
            // 1970-01-01 was a Thursday; Monday is 1.
            DAY_OF_WEEK => Datum::Number(((days + 3).rem_euclid(7) + 1) as f64),
            DAY_OF_YEAR => Datum::Number((days - days_from_civil(year, 1, 1) + 1) as f64),
            HOURS => Datum::Number((seconds_of_day / 3600.0).floor()),
            MINUTES => Datum::Number((seconds_of_day / 60.0).floor() % 60.0),
            _ => Datum::Number(truncate_to_millis(seconds_of_day % 60.0)),
        }))
    }

    async fn in_timezone(&self, args: &[Term]) -> Result<Value, ReqlError> {
        arity(args, 2, 2)?;
        let (epoch, _) = expect_time(self.datum_argument(args, 0).await?)
            .map_err(|error| error.within(Frame::Position(0)))?;
        let zone = self.string_argument(args, 1).await?;
        let (_, canonical) = parse_timezone(&zone)?;
        Ok(Value::Datum(Datum::Time {
            epoch_seconds: epoch,
            timezone: canonical,
        }))
    }

    async fn during(
        &self,
        args: &[Term],
        optargs: &BTreeMap<String, Term>,
    ) -> Result<Value, ReqlError> {
        arity(args, 3, 3)?;
        let mut instants = Vec::with_capacity(3);
        for index in 0..3 {
            instants.push(
                expect_time(self.datum_argument(args, index).await?)
                    .map_err(|error| error.within(Frame::Position(index)))?
                    .0,
            );
        }
        let closed = |name: &'static str, default: bool| async move {
            match self.optional_datum(optargs, name).await? {
                None => Ok(default),
                Some(Datum::String(text)) if text == "closed" => Ok(true),
                Some(Datum::String(text)) if text == "open" => Ok(false),
                Some(other) => Err(ReqlError::logic(format!(
                    "Expected `open` or `closed` for optarg `{name}` (got `{}`).",
                    super::write::option_text(&other)
                ))),
            }
        };
        let (left_closed, right_closed) = (
            closed("left_bound", true).await?,
            closed("right_bound", false).await?,
        );
        let (time, start, end) = (instants[0], instants[1], instants[2]);
        let after_start = if left_closed {
            time >= start
        } else {
            time > start
        };
        let before_end = if right_closed {
            time <= end
        } else {
            time < end
        };
        Ok(Value::Datum(Datum::Bool(after_start && before_end)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips() {
        for days in [-800_000, -1, 0, 1, 365, 10_957, 19_000, 2_932_896] {
            let (year, month, day) = civil_from_days(days);
            assert_eq!(days_from_civil(year, month, day), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn iso8601_reads_and_writes_rethinkdb_forms() {
        let Datum::Time {
            epoch_seconds,
            timezone,
        } = parse_iso8601("2013-07-30T20:56:05-07:00", None).unwrap()
        else {
            unreachable!()
        };
        assert_eq!(epoch_seconds, 1_375_242_965.0);
        assert_eq!(
            to_iso8601(epoch_seconds, &timezone).unwrap(),
            "2013-07-30T20:56:05-07:00"
        );
        assert_eq!(
            to_iso8601(truncate_to_millis(1.4444445), "+00:00").unwrap(),
            "1970-01-01T00:00:01.444+00:00"
        );
        assert_eq!(truncate_to_millis(1.001), 1.001);
        assert!(parse_iso8601("2013-07-30T20:56:05", None).is_err());
    }
}

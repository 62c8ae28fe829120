//! Prices and the cost of a request in integer micro-units, never floats.

use gateway_proto::money::Micros;

use super::TokenUsage;

/// Prices per 1M tokens in micro-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Price {
    pub input: Micros,
    pub cached_input: Micros,
    pub output: Micros,
}

/// Cost in micro-units: `((input − cached)·in + cached·cached_in + output·out) / 1M × multiplier`.
///
/// Rounding rule: the exact product is computed in 128-bit integers and rounded once, half
/// up, to a whole micro-unit. Cached tokens are part of input and reasoning tokens part of
/// output, so neither is billed twice.
pub fn cost(usage: &TokenUsage, price: &Price, multiplier_ppm: u64) -> Micros {
    let u = usage.normalized();
    let rate = |m: Micros| u128::try_from(m.get().max(0)).unwrap_or(0);
    let per_million = u128::from(u.input - u.cached) * rate(price.input)
        + u128::from(u.cached) * rate(price.cached_input)
        + u128::from(u.output) * rate(price.output);
    // per_million is in 1e-6 micros; the multiplier is in parts per million.
    const SCALE: u128 = 1_000_000 * 1_000_000;
    let scaled = per_million * u128::from(multiplier_ppm);
    let rounded = (scaled + SCALE / 2) / SCALE;
    Micros(i64::try_from(rounded).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRICE: Price = Price {
        input: Micros(1_250_000),      // $1.25 / 1M
        cached_input: Micros(125_000), // $0.125 / 1M
        output: Micros(10_000_000),    // $10 / 1M
    };

    #[test]
    fn cost_bills_cached_and_reasoning_once() {
        let usage = TokenUsage {
            input: 1_000_000,
            cached: 400_000,
            output: 100_000,
            reasoning: 60_000,
        };
        // 600k·1.25 + 400k·0.125 + 100k·10 = 0.75 + 0.05 + 1.0 dollars.
        assert_eq!(cost(&usage, &PRICE, 1_000_000), Micros(1_800_000));
        assert_eq!(cost(&usage, &PRICE, 1_500_000), Micros(2_700_000));
        assert_eq!(cost(&usage, &PRICE, 0), Micros(0));
    }

    #[test]
    fn cost_rounds_half_up_once() {
        let price = Price {
            input: Micros(1),
            cached_input: Micros(0),
            output: Micros(0),
        };
        let tokens = |input| TokenUsage {
            input,
            ..Default::default()
        };
        assert_eq!(cost(&tokens(499_999), &price, 1_000_000), Micros(0));
        assert_eq!(cost(&tokens(500_000), &price, 1_000_000), Micros(1));
        assert_eq!(cost(&tokens(1_499_999), &price, 1_000_000), Micros(1));
        assert_eq!(cost(&tokens(1_500_000), &price, 1_000_000), Micros(2));
    }

    #[test]
    fn cached_beyond_input_is_clamped() {
        let usage = TokenUsage {
            input: 10,
            cached: 50,
            output: 0,
            reasoning: 0,
        };
        let price = Price {
            input: Micros(1_000_000),
            cached_input: Micros(0),
            output: Micros(0),
        };
        assert_eq!(cost(&usage, &price, 1_000_000), Micros(0));
    }
}

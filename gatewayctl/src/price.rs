//! `gatewayctl price …`: model prices per 1M tokens, in currency units.

use std::io::Write;

use clap::{Args, Subcommand};
use gateway_proto::{money::Micros, v1};

use crate::{
    CliError, Client,
    output::{Table, print_json},
};

/// Price commands.
#[derive(Debug, Subcommand)]
pub enum PriceCmd {
    /// Set a model's price per 1M tokens (`--model '*'` is the default).
    Set(PriceSet),
    /// List prices.
    List,
}

/// Runs one price command. Both print a table: `set` shows the one row it wrote.
pub(crate) async fn run(
    client: &mut Client,
    cmd: PriceCmd,
    json: bool,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    let prices = match cmd {
        PriceCmd::Set(args) => {
            let set = args.send(client).await?;
            if json {
                return print_json(out, &set);
            }
            vec![set]
        }
        PriceCmd::List => {
            let list = client
                .list_prices(v1::ListPricesRequest {})
                .await?
                .into_inner()
                .prices;
            if json {
                return print_json(out, &list);
            }
            list
        }
    };
    let mut t = Table::new(&["MODEL", "INPUT /1M", "CACHED INPUT /1M", "OUTPUT /1M"]);
    for p in prices {
        t.row(vec![
            p.model,
            Micros(p.input_micros).to_string(),
            Micros(p.cached_input_micros).to_string(),
            Micros(p.output_micros).to_string(),
        ]);
    }
    Ok(t.write(out)?)
}

/// `price set`.
#[derive(Debug, Args)]
pub struct PriceSet {
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub input: Micros,
    #[arg(long)]
    pub cached_input: Micros,
    #[arg(long)]
    pub output: Micros,
}

impl PriceSet {
    async fn send(self, client: &mut Client) -> Result<v1::Price, CliError> {
        let price = v1::Price {
            model: self.model,
            input_micros: self.input.get(),
            cached_input_micros: self.cached_input.get(),
            output_micros: self.output.get(),
        };
        let request = v1::SetPriceRequest { price: Some(price) };
        Ok(client.set_price(request).await?.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn set(args: &[&str]) -> Result<PriceSet, clap::Error> {
        let argv = ["gatewayctl", "price", "set", "--model", "*"]
            .iter()
            .chain(args);
        match Cli::try_parse_from(argv)?.command {
            Command::Price(PriceCmd::Set(set)) => Ok(set),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn prices_are_currency_units_parsed_exactly() {
        let price = set(&[
            "--input",
            "1.25",
            "--cached-input",
            "0.125",
            "--output",
            "10",
        ])
        .unwrap();
        assert_eq!(price.input, Micros(1_250_000));
        assert_eq!(price.cached_input, Micros(125_000));
        assert_eq!(price.output, Micros(10_000_000));
        let err = set(&["--input", "1", "--cached-input", "0", "--output", "1e3"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--output"), "{err}");
        assert!(err.contains("is not an amount"), "{err}");
    }
}

//! A product's command line with help that names the product: the help
//! texts of [`ServeArgs`](super::config::ServeArgs) and `ServiceArgs` say
//! "the program's name" and `PREFIX_<KEY>` where a product's own name and
//! prefix belong (clap's derive fixes them when this crate is compiled);
//! [`Product::parse`] puts them in, and adds where the product's settings
//! are documented.

use clap::builder::StyledStr;
use clap::{Arg, Command, CommandFactory, Parser};

use super::Product;

impl Product {
    /// `C`'s command (a clap command that flattens
    /// [`ServeArgs`](super::config::ServeArgs), and `ServiceArgs` if it
    /// has them) with help that shows this product: `[default: NAME]` for
    /// `--name`, `--server-name` and `--service-name`, its variables
    /// (`PREFIX_<KEY>`), its service's display name and log file, and
    /// where its settings are documented
    /// ([`with_config_docs`](Product::with_config_docs)).
    pub fn command<C: CommandFactory>(&self) -> Command {
        self.adapt(C::command())
    }

    /// Parses the process's arguments into `C` as `C::parse()` does (on
    /// an error, or for `--help`, it prints and exits), with the help of
    /// [`Product::command`].
    pub fn parse<C: Parser>(&self) -> C {
        let mut matches = self.command::<C>().get_matches();
        C::from_arg_matches_mut(&mut matches)
            .unwrap_or_else(|e| e.format(&mut self.command::<C>()).exit())
    }

    /// [`Product::parse`] of `args` (the program's name first), returning
    /// the error (or the help asked for) instead of exiting.
    pub fn try_parse_from<C, I, T>(&self, args: I) -> Result<C, clap::Error>
    where
        C: Parser,
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut matches = self.command::<C>().try_get_matches_from(args)?;
        C::from_arg_matches_mut(&mut matches).map_err(|e| e.format(&mut self.command::<C>()))
    }

    /// `command` and its subcommands, with this product in their help.
    pub fn adapt(&self, command: Command) -> Command {
        command
            .mut_args(|arg| self.adapt_arg(arg))
            .mut_subcommands(|command| self.adapt(command))
    }

    fn adapt_arg(&self, arg: Arg) -> Arg {
        let help = arg.get_help().map(|help| self.adapt_text(help));
        let long_help = arg.get_long_help().map(|help| self.adapt_text(help));
        let arg = match help {
            Some(help) => arg.help(help),
            None => arg,
        };
        match long_help {
            Some(help) => arg.long_help(help),
            None => arg,
        }
    }

    /// `help` with the placeholders for the program replaced by this
    /// product; the docs are added where the variables are named.
    fn adapt_text(&self, help: &StyledStr) -> String {
        let name = self.name();
        let mut text = help
            .to_string()
            .replace(
                "[default: the program's name]",
                &format!("[default: {name}]"),
            )
            .replace("`PROGRAM IPC service`", &format!("`{name} IPC service`"))
            .replace(
                r"%ProgramData%\PROGRAM\",
                &format!(r"%ProgramData%\{name}\"),
            );
        if text.contains("PREFIX_<KEY>") {
            text = text.replace("PREFIX_<KEY>", &format!("{}<KEY>", self.env_prefix()));
            if let Some(docs) = self.config_docs() {
                text = format!("{}; see {docs}", text.trim_end_matches('.'));
            }
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::config::ServeArgs;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(clap::Subcommand, Debug)]
    #[allow(clippy::large_enum_variant)] // parsed once
    enum Sub {
        Serve(ServeArgs),
        /// A command of the product's own, with a `--name` of its own.
        Call {
            /// Whom to call [default: the program's name]
            #[arg(long)]
            name: Option<String>,
        },
    }

    fn help(product: &Product, path: &[&str]) -> String {
        let mut command = product.command::<Cli>();
        for &name in path {
            command = command.find_subcommand(name).unwrap().clone();
        }
        command.render_help().to_string()
    }

    #[test]
    fn the_help_names_the_product_its_prefix_and_docs() {
        let updated = Product::new("updated", "UPDATED_");
        let serve = help(&updated, &["serve"]);
        assert_eq!(serve.matches("[default: updated]").count(), 2, "{serve}");
        assert!(serve.contains("(`UPDATED_<KEY>`)"), "{serve}");
        assert!(!serve.contains("see "), "no docs to point to: {serve}");
        assert!(
            !serve.contains("pipesvc") && !serve.contains("PIPESVC"),
            "{serve}"
        );
        // Its own commands keep their text, with the product's name too.
        assert!(help(&updated, &["call"]).contains("[default: updated]"));

        let pipesvc = help(&Product::PIPESVC, &["serve"]);
        assert_eq!(pipesvc.matches("[default: pipesvc]").count(), 2);
        assert!(pipesvc.contains("(`PIPESVC_<KEY>`)"), "{pipesvc}");
        assert!(pipesvc.contains("; see CONFIG.md"), "{pipesvc}");
    }

    #[test]
    fn parsing_through_the_product_reads_the_same_arguments() {
        let updated = Product::new("updated", "UPDATED_");
        let cli: Cli = updated
            .try_parse_from(["updated", "serve", "--max-connections", "3"])
            .unwrap();
        let Sub::Serve(args) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(
            args.settings.max_connections.map(|n| n.get::<u64>()),
            Some(3)
        );
        let err = updated
            .try_parse_from::<Cli, _, _>(["updated", "serve", "--help"])
            .unwrap_err();
        assert!(err.to_string().contains("[default: updated]"), "{err}");
    }
}

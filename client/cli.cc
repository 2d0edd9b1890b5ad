#include "client/cli.h"

#include <CLI/CLI.hpp>
#include <memory>

#include "absl/status/statusor.h"
#include "common/spec.h"

namespace halftime {
namespace {

// Options every verb shares.
struct CommonOptions {
  std::string output = "table";
};

// `halftime validate SPEC...`: load, resolve and print each spec.
int RunValidate(const std::vector<std::string>& paths,
                const std::vector<std::string>& overrides,
                const std::string& output, std::ostream& out,
                std::ostream& err) {
  const SpecFormat format =
      output == "json" ? SpecFormat::kJson : SpecFormat::kYaml;
  int exit_code = kExitOk;
  bool first = true;
  for (const std::string& path : paths) {
    absl::StatusOr<v1::JobSpec> spec = LoadJobSpecFile(path, overrides);
    if (!spec.ok()) {
      err << spec.status().message() << "\n";
      exit_code = kExitBadInput;
      continue;
    }
    if (format == SpecFormat::kYaml && !first) out << "---\n";
    if (format == SpecFormat::kYaml && paths.size() > 1)
      out << "# " << path << "\n";
    out << FormatJobSpec(*spec, format);
    first = false;
  }
  if (exit_code == kExitOk && paths.size() > 1) {
    err << paths.size() << " specs valid\n";
  }
  return exit_code;
}

}  // namespace

int RunCli(const std::vector<std::string>& args, std::ostream& out,
           std::ostream& err) {
  CLI::App app{
      "halftime: run fine-tuning jobs in mixed precision and measure "
      "what it saved",
      "halftime"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "Show help for every verb");

  std::string output = "table";
  auto add_output = [&output](CLI::App* verb,
                              std::vector<std::string> formats) {
    verb->add_option("-o,--output", output, "Output format")
        ->check(CLI::IsMember(formats))
        ->capture_default_str();
  };

  std::vector<std::string> spec_paths;
  std::vector<std::string> overrides;
  CLI::App* validate =
      app.add_subcommand("validate", "Check job specs and print them resolved");
  validate->add_option("SPEC", spec_paths, "Spec files (YAML or JSON)")
      ->required();
  validate->add_option("--set", overrides,
                       "Override a field, e.g. --set optimizer.lr=1e-3");
  add_output(validate, {"yaml", "json"});
  output = "yaml";

  std::vector<const char*> argv;
  argv.reserve(args.size());
  for (const auto& a : args) argv.push_back(a.c_str());
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::CallForHelp& e) {
    out << app.help();
    return kExitOk;
  } catch (const CLI::CallForAllHelp& e) {
    out << app.help("", CLI::AppFormatMode::All);
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    err << "halftime: " << e.what() << "\n";
    err << "Run 'halftime --help' for usage.\n";
    return kExitBadInput;
  }

  if (validate->parsed()) {
    return RunValidate(spec_paths, overrides, output, out, err);
  }
  err << "halftime: no verb given\n";
  return kExitBadInput;
}

}  // namespace halftime

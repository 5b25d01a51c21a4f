package dev.bounce.bench;

import java.util.Collection;
import java.util.Map;
import java.util.TreeMap;
import org.openjdk.jmh.results.RunResult;
import org.openjdk.jmh.runner.Runner;
import org.openjdk.jmh.runner.options.CommandLineOptions;
import org.openjdk.jmh.runner.options.OptionsBuilder;

/**
 * Runs {@link RestrictedDmaBenchmark} for every mode in one run and prints, per buffer size, each
 * restricted mode's rate as a fraction of shared mode's (issue 7's goal: restricted costs at most
 * 10%, a ratio of at least 0.90). JMH arguments are passed on ({@code -p bytes=65536}, {@code -i
 * 10}, ...).
 */
public final class RestrictedDmaRatio {
  private RestrictedDmaRatio() {}

  public static void main(String[] args) throws Exception {
    Collection<RunResult> results =
        new Runner(
                new OptionsBuilder()
                    .parent(new CommandLineOptions(args))
                    .include(RestrictedDmaBenchmark.class.getName() + ".echo")
                    .build())
            .run();
    // bytes -> mode -> chains per second
    Map<Integer, Map<String, Double>> rates = new TreeMap<>();
    for (RunResult r : results) {
      int bytes = Integer.parseInt(r.getParams().getParam("bytes"));
      rates
          .computeIfAbsent(bytes, b -> new TreeMap<>())
          .put(r.getParams().getParam("mode"), r.getPrimaryResult().getScore());
    }
    System.out.println();
    System.out.println("restricted versus shared (chains per second, ratio to shared):");
    rates.forEach(
        (bytes, byMode) -> {
          Double shared = byMode.get("shared");
          byMode.forEach(
              (mode, rate) ->
                  System.out.printf(
                      "  %6d B  %-12s %,12.0f/s%s%n",
                      bytes,
                      mode,
                      rate,
                      shared == null || mode.equals("shared")
                          ? ""
                          : String.format("  ratio %.2f", rate / shared)));
        });
  }
}

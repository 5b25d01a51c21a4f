package dev.bounce.bench;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A benchmark's measurements by name, one per round, with the cores the second process and this one
 * used during each ({@link ProcessCpu}). A ratio is the median of each round's ratio (the two
 * measured moments apart), which the machine's load swings between rounds do not move as much as a
 * ratio of medians.
 */
final class Samples {
  private final Map<String, List<Double>> values = new LinkedHashMap<>();

  /** One round's {@code value} of {@code name}, and the cores used while it was measured. */
  void add(String name, double value, double secondCores, double selfCores) {
    add(name, value);
    add(name + " second cores", secondCores);
    add(name + " self cores", selfCores);
  }

  /** One round's {@code value} of {@code name}, a figure derived from a measurement. */
  void add(String name, double value) {
    values.computeIfAbsent(name, k -> new ArrayList<>()).add(value);
  }

  double median(String name) {
    return median(values.get(name));
  }

  /** The median cores the second process used while {@code name} was measured. */
  double secondCores(String name) {
    return median(name + " second cores");
  }

  /** The median cores this process used while {@code name} was measured. */
  double selfCores(String name) {
    return median(name + " self cores");
  }

  /** The median over the rounds of {@code numerator / denominator}. */
  double ratio(String numerator, String denominator) {
    List<Double> n = values.get(numerator);
    List<Double> d = values.get(denominator);
    List<Double> ratios = new ArrayList<>();
    for (int i = 0; i < n.size(); i++) ratios.add(n.get(i) / d.get(i));
    return median(ratios);
  }

  private static double median(List<Double> values) {
    double[] v = values.stream().mapToDouble(Double::doubleValue).sorted().toArray();
    return v.length % 2 == 1 ? v[v.length / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
  }
}

"""Reading a /metrics scrape: every sample by name and labels, through prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

SeriesKey = tuple[str, frozenset[tuple[str, str]]]


class Scrape:
    """The samples of one scrape."""

    def __init__(self, text: str) -> None:
        self.samples: dict[SeriesKey, float] = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def value(self, name: str, **labels: str) -> float:
        """The sample of exactly these labels; a series that is not there fails, naming the ones that are."""
        key = (name, frozenset(labels.items()))
        if key not in self.samples:
            present = sorted(dict(found) for found_name, found in self.samples if found_name == name)
            raise AssertionError(f"no sample {name}{labels}; {name} has {present}")
        return self.samples[key]

    def sum(self, name: str, **labels: str) -> float:
        """The sum over every series of `name` whose labels include these (0 when none)."""
        wanted = set(labels.items())
        return sum(value for (found, series), value in self.samples.items() if found == name and wanted <= series)

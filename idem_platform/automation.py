"""Declarative automation: downstream partitions follow their upstream partitions, when the content changed.

`AutomationCondition.eager()` only looks at the latest time partition, so re-materializing an old upstream
day would never reach downstream. This condition drops that restriction and, instead of "any dependency
updated", asks "any dependency's DataVersion changed": the DataVersion is the partition's fingerprint, so a
rerun that changed nothing causes no downstream work.
"""

import dagster as dg


def follows_upstream_content() -> dg.AutomationCondition:
    return (
        (
            dg.AutomationCondition.newly_missing()
            | dg.AutomationCondition.any_deps_match(dg.AutomationCondition.data_version_changed())
        ).since_last_handled()
        & ~dg.AutomationCondition.any_deps_missing()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("upstream content changed")

"""emwb where researchers already work: its evaluations and judge inside Inspect, and Inspect logs in its tables.

`inspect_tasks`: emwb's registered evaluations as Inspect tasks (`inspect eval emwb/free_form`), found through
the package's `inspect_ai` entry point. `inspect_scorer`: emwb's judge as an Inspect scorer. `inspect_log`: an
Inspect eval log as answers and judgments for `emwb analyze --inspect-log`. Needs the `inspect` extra.
"""

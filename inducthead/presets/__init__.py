"""Named presets: a model config, the task it trains on and a training recipe.

>>> from inducthead import presets
>>> presets.list()
>>> preset = presets.get("demo")
>>> model = HookedTransformer(preset.model); run = train(model, preset.make_task(), preset.train)
>>> custom = presets.from_file("my.json")    # a JSON config file (`presets.files`)
"""

from inducthead.presets import chen, demo, musat, olsson, wang  # noqa: F401  (register the families)
from inducthead.presets.files import from_file, to_json
from inducthead.presets.registry import Preset, get, list, register, resolve, table

__all__ = ["Preset", "get", "list", "register", "resolve", "table", "from_file", "to_json"]

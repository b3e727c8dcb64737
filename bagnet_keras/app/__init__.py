"""The application above the library: the ``bagnet-keras`` command (`cli`), the offline main job
(`demo`) and the explain and compare workflows (`workflows`). Nothing in the library imports it."""

"""Stream state: bounded memory bank (``memory``), streaming engine (``engine``), offline runner
(``offline``). Import from the submodules: the model imports ``memory``, so this package's
``__init__`` must not import the engine (it imports the model)."""

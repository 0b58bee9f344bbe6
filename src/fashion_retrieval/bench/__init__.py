"""How fast a model embeds here: the ``bench`` command's harness and its generated data (not used by the library)."""

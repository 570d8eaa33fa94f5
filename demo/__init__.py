"""The end-to-end demo behind ``make run`` (:mod:`demo.run`)."""

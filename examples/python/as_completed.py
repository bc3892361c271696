# The seed program -- ProcessPoolExecutor + as_completed(), waiting for tasks in completion
# order -- on zexec. Against the original, only the marked lines changed: the import, the
# executor line, and the task passed by name. `task` itself runs, unchanged, in zexecd's workers.
#
#   PYTHONPATH=client-lib/python /usr/bin/python3 examples/python/as_completed.py
from time import sleep
from random import random
import zexec, zexec.worker  # changed: was `from concurrent.futures import ProcessPoolExecutor`
from concurrent.futures import as_completed


# custom task that will sleep for a variable amount of time
def task(name):
    # sleep for less than a second, times ten
    value = random()
    sleep(value * 10)
    return f'Task={name}: {value:.2f}'


# entry point
if __name__ == '__main__':
    # start the process pool
    with zexec.Executor(workers=10, worker_command=zexec.worker.command(__file__, 'task')) as executor:  # changed
        # submit tasks and collect futures
        futures = [executor.submit('task', i) for i in range(10)]  # changed: the task by name
        # process task results as they are available
        for future in as_completed(futures):
            # retrieve the result
            print(future.result())

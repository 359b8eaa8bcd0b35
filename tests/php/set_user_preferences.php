<?php
// Sets a user's global SuiteCRM preferences the way SuiteCRM's profile page does
// (User::setPreference, then UserPreference::savePreferencesToDB: base64 of serialize()),
// run with php-cli inside a SuiteCRM root.  Usage: php set_user_preferences.php ROOT USER_ID JSON
chdir($argv[1]);
define('sugarEntry', true);
require_once 'include/entryPoint.php';
$user = BeanFactory::getBean('Users', $argv[2]);
if (empty($user) || empty($user->id)) {
    fwrite(STDERR, "no user {$argv[2]}\n");
    exit(1);
}
// As the logged-in user, so the preferences already saved are loaded first and kept.
$GLOBALS['current_user'] = $user;
foreach (json_decode($argv[3], true) as $name => $value) {
    $user->setPreference($name, $value, 0, 'global');
}
$user->savePreferencesToDB();
echo "saved\n";
